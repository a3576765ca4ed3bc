"""Benchmark: `architecture: auto` on tf_slim's ResNet-50 vs TF's own SavedModel routes, side by side.

    python bench/auto_resnet50.py [--repeat 3] [--work DIR]

Builds `resnet_v1_50` (tf_slim, 25.6 M parameters) with zoo/slim_nets.py in its own process, then times,
on the same graph and checkpoint, each route in a fresh process of its own (each pays its own first-use
costs), the routes alternating, `--repeat` times:

  ferry   inspect + reconstruct (translate the graph + build Keras) + restore (name map) + export (the
          SavedModel and the .keras archive, each reloaded and re-checked)
  wrap    tf.compat.v1.wrap_function(import_meta_graph) + prune + tf.saved_model.save
          (TF's own route; on a TF1-era graph it lifts no variables: the SavedModel has no weights)
  freeze  import_meta_graph + Session restore + convert_variables_to_constants + wrap_function +
          tf.saved_model.save (the working TF route: constants, not a trainable model; no re-check)

and checks each SavedModel against the TF1 graph on one shard. Prints median seconds and the ratio to
the freeze route (goal for ferry: <= 1.0), with ferry's stages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

import ferry  # noqa: E402,F401  (TF environment defaults before TensorFlow loads)
from ferry.shards import load_shard  # noqa: E402
from ferry.spec import load_spec  # noqa: E402
from ferry.stages import WorkDir  # noqa: E402
from ferry.tf1.session import run_tf1  # noqa: E402
from tasks.export import call_savedmodel  # noqa: E402
from tasks.inspect import inspect_graph  # noqa: E402
from tasks.reconstruct import reconstruct  # noqa: E402
from tasks.restore import restore_weights  # noqa: E402

NAME = "slim_resnet_v1_50"


def build(work: Path) -> Path:
    folder = work / "zoo" / NAME
    if not (folder / "manifest.json").exists():
        subprocess.run([sys.executable, str(REPO / "zoo" / "slim_nets.py"), "--out", str(work / "zoo"),
                        "--only", NAME], check=True)
    return folder


def spec_for(folder: Path, work: Path):
    path = work / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump({
        "name": NAME, "architecture": "auto", "name_map": {"skip": ["optimizer"]},
        "source": {"meta": str(folder / "model.ckpt.meta"), "inputs": {"images": "images:0"},
                   "outputs": {"probs": "probs:0"}},
        "verify": {"shards": str(folder / "shards" / "*.npz"), "batch_size": 4,
                   "tolerance": {"atol": 1e-5, "rtol": 1e-4}},
        "export": {"dir": str(work / "exports" / NAME)}}))
    return load_spec(path)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# export's parts, timed inside the stage (the in-memory outputs run in a thread beside the first two)
EXPORT_PARTS = {"save_and_reload_keras": ".keras save+reload", "serving_functions": "trace",
                "write_savedmodel": "SavedModel write", "call_savedmodel": "SavedModel reload+call",
                "run_keras": "in-memory outputs (thread)"}


def ferry_route(spec, work: Path) -> dict[str, float]:
    """ferry's stages as a model's process runs them, and export's parts; seconds each."""
    import tasks.export as export

    parts: dict[str, float] = {}

    def timing(name, function):
        def timed_part(*args, **kwargs):
            result, seconds = timed(lambda: function(*args, **kwargs))
            parts[EXPORT_PARTS[name]] = parts.get(EXPORT_PARTS[name], 0.0) + seconds
            return result
        return timed_part

    for name in EXPORT_PARTS:
        setattr(export, name, timing(name, getattr(export, name)))
    stages = WorkDir(work / "stages")
    inventory, t_inspect = timed(lambda: inspect_graph(spec, stages))
    info, t_reconstruct = timed(lambda: reconstruct(spec, inventory))
    restored, t_restore = timed(lambda: restore_weights(spec, info, inventory, stages))
    _, t_export = timed(lambda: export.export_savedmodel(spec, info, restored, spec.shard_paths()[0]))
    return {"inspect": t_inspect, "reconstruct": t_reconstruct, "restore": t_restore, "export": t_export,
            **{f"export: {k}": v for k, v in parts.items()}}


def wrap_route(spec, out: Path) -> None:
    """TF's own: wrap_function around import_meta_graph, prune to the serving tensors, save."""
    def imported():
        tf.compat.v1.train.import_meta_graph(str(spec.source.meta), clear_devices=True)

    wrapped = tf.compat.v1.wrap_function(imported, [])
    graph = wrapped.graph
    fn = wrapped.prune(feeds=[graph.get_tensor_by_name("images:0")],
                       fetches={"probs": graph.get_tensor_by_name("probs:0")})
    module = tf.Module()
    module.serve = fn
    tf.saved_model.save(module, str(out), signatures={"serving_default": fn})


def freeze_route(spec, out: Path) -> None:
    """Session restore, freeze variables to constants, wrap the frozen GraphDef, save (the spec's inputs and
    outputs as the signature)."""
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(str(spec.source.meta), clear_devices=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, str(spec.source.checkpoint_prefix))
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [t.split(":")[0] for t in spec.source.outputs.values()])

    def imported():
        tf.compat.v1.import_graph_def(frozen, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    fn = wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(t) for t in spec.source.inputs.values()],
                       fetches={name: wrapped.graph.get_tensor_by_name(t) for name, t in spec.source.outputs.items()})
    module = tf.Module()
    module.serve = fn
    tf.saved_model.save(module, str(out), signatures={"serving_default": fn})


def check(spec, path: Path, arrays: dict, want: np.ndarray) -> str:
    """How the SavedModel's output compares with the TF1 graph's."""
    try:
        got = call_savedmodel(spec, path, arrays)
    except Exception as exc:  # noqa: BLE001 - a broken export is a result to report
        return f"fails when called: {type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
    key = "probs" if "probs" in got else next(iter(got))
    err = float(np.max(np.abs(got[key] - want)))
    return f"max abs err vs TF1 {err:.2e}"


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


OUT = {"ferry": None, "wrap": "wrap", "freeze": "freeze"}  # where each route writes, in the work folder


def measure(route: str, work: Path) -> dict:
    """One route, timed in this (fresh) process."""
    spec = spec_for(work / "zoo" / NAME, work)
    if route == "ferry":
        stages, seconds = timed(lambda: ferry_route(spec, work))
        return {"seconds": seconds, "stages": stages}
    out = work / OUT[route]
    if out.exists():
        shutil.rmtree(out)
    _, seconds = timed(lambda: (wrap_route if route == "wrap" else freeze_route)(spec, out))
    return {"seconds": seconds}


def run(route: str, work: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", route, "--work", str(work)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{route} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the model and exports (default: temp)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each route (alternating)")
    parser.add_argument("--measure", choices=list(OUT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.measure:
        print(json.dumps(measure(args.measure, work)))
        return
    folder = build(work)
    spec = spec_for(folder, work)
    arrays = load_shard(spec, spec.shard_paths()[0])
    want = run_tf1(spec, arrays, 4, "/CPU:0")["probs"]

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[dict]] = {route: [] for route in OUT}
    for _ in range(args.repeat):
        for route in OUT:
            runs[route].append(run(route, work))
    median = {route: statistics.median(r["seconds"] for r in done) for route, done in runs.items()}

    print(f"\nResNet-50 (tf_slim resnet_v1_50, 25.6 M params) on {tf.config.list_logical_devices()[0].device_type}, "
          f"each route in a fresh process, median of {args.repeat}")
    print(f"{'route':<42}{'seconds':>9}{'/ freeze':>10}{'MB':>8}  runs; result")
    rows = [("ferry auto: inspect+reconstruct+restore+export", "ferry", spec.export.dir),
            ("TF wrap_function(import_meta_graph)", "wrap", work / "wrap"),
            ("TF freeze + wrap_function", "freeze", work / "freeze")]
    for label, route, path in rows:
        seconds = ", ".join(f"{r['seconds']:.2f}" for r in runs[route])
        print(f"{label:<42}{median[route]:>9.2f}{median[route] / median['freeze']:>10.2f}{size_mb(Path(path)):>8.1f}"
              f"  {seconds}; {check(spec, Path(path), arrays, want)}")
    stages = {name: statistics.median(r["stages"][name] for r in runs["ferry"]) for name in runs["ferry"][0]["stages"]}
    print("ferry stages (median): " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()
                                                if not k.startswith("export: ")))
    print("  export's parts (median): " + ", ".join(f"{k[8:]} {v:.2f} s" for k, v in stages.items()
                                                   if k.startswith("export: ")))
    print(f"ferry / freeze: {median['ferry'] / median['freeze']:.2f}   (goal <= 1.0)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
