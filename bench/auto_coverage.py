"""Benchmark: how much of a fixture set `architecture: auto` converts, and its time beside TF's freeze route.

    python bench/auto_coverage.py [--large] [--only NAME ...] [--work DIR]

Builds, each in its own process: every tf_slim net zoo/slim_nets.py builds by default (`--large`: vgg_a/16/19,
OverFeat, resnet_v1_50/101, resnet_v2_50/101, inception_v3 too), google BERT's `modeling.py`
(tests/tf1_builders/bert_tiny.py), five RNN models of tests/tf1_builders/rnn_graphs.py, five vision models of
tests/tf1_builders/auto_ops_vision.py (a tf.layers encoder-decoder, conv2d_transpose, every resize mode, LRN,
conv3d) and the fallback model of tests/tf1_builders/auto_fallback.py (ops with no translation, run as
`ferry.RawOp`); `--only` keeps the models named (and builds only theirs). Then per model, each route once in a
fresh process of its own:

  ferry   reconstruct + restore + export (inspect timed apart), with bench/auto_resnet50.py's `ferry_route`;
          converted: every stage done and the SavedModel within the default tolerance of the TF1 graph on
          every shard (the worst shard's errors are printed)
  freeze  Session restore + convert_variables_to_constants + wrap_function + save, `freeze_route` there

Prints a row per model (fallback op types, seconds, ferry / freeze) and converted / total.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # what verification pins: parity measures the conversion

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from auto_resnet50 import ferry_route, freeze_route, timed  # noqa: E402

import ferry  # noqa: E402,F401  (TF environment defaults before TensorFlow loads)
from ferry.parity import compare  # noqa: E402
from ferry.shards import load_shard  # noqa: E402
from ferry.spec import load_spec  # noqa: E402
from ferry.stages import WorkDir  # noqa: E402

SLIM = ["slim_resnet_v1", "slim_resnet_v2", "slim_inception_v1", "slim_alexnet_v2",
        "slim_inception_v2"]  # zoo/slim_nets.py's DEFAULT
SLIM_LARGE = ["slim_vgg_a", "slim_vgg_16", "slim_vgg_19", "slim_overfeat", "slim_resnet_v1_50", "slim_resnet_v1_101",
              "slim_resnet_v2_50", "slim_resnet_v2_101", "slim_inception_v3"]
RNN = ["final_state", "stacked_lengths", "bidirectional", "block_cells", "static_rnn"]  # of rnn_graphs.py
VISION = ["encoder_decoder", "conv_transpose", "resize", "lrn", "conv3d"]  # of auto_ops_vision.py
BUILDERS = REPO / "tests" / "tf1_builders"


def build(work: Path, large: bool, only: list[str] | None = None) -> dict[str, Path]:
    """Build the fixtures (each builder in its own process, TF1 behaviour kept out of this one); model
    name -> its folder (`model.ckpt.*`, `shards/`, `manifest.json`). `only`: those models, and their builders."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    slim = SLIM + (SLIM_LARGE if large else [])
    models = {**{name: work / "slim" / name for name in slim}, "bert_tiny": work / "bert" / "bert_tiny",
              **{f"rnn_{name}": work / "rnn" / name for name in RNN},
              **{f"vision_{name}": work / "vision" / name for name in VISION},
              "fallback": work / "fallback" / "fallback"}
    if only:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise SystemExit(f"--only: no model {unknown} (known: {', '.join(models)}; large nets need --large)")
        models = {name: folder for name, folder in models.items() if name in only}
    slim = [name for name in slim if name in models]
    steps = [(["zoo/slim_nets.py", "--out", str(work / "slim"), "--only", *slim], slim),
             ([str(BUILDERS / "bert_tiny.py"), str(work / "bert")], ["bert_tiny"]),
             ([str(BUILDERS / "rnn_graphs.py"), str(work / "rnn")], [f"rnn_{name}" for name in RNN]),
             ([str(BUILDERS / "auto_ops_vision.py"), str(work / "vision")], [f"vision_{name}" for name in VISION]),
             ([str(BUILDERS / "auto_fallback.py"), str(work / "fallback")], ["fallback"])]
    for args, names in steps:
        wanted = [models[name] for name in names if name in models]
        if wanted and not all((folder / "manifest.json").exists() for folder in wanted):
            subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, capture_output=True)
    return models


def spec_for(name: str, folder: Path, work: Path):
    """`architecture: auto` on the model folder, its manifest's inputs and outputs, default tolerances."""
    found = json.loads((folder / "manifest.json").read_text())
    path = work / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": name, "architecture": "auto", "name_map": {"skip": ["optimizer"]},
        "source": {"meta": str(folder / "model.ckpt.meta"), "inputs": found["inputs"], "outputs": found["outputs"]},
        "verify": {"shards": str(folder / "shards" / "*.npz")},  # batches of 64: a shard at once
        "export": {"dir": str(work / "exports" / name)}}))
    return load_spec(path)


def measure(route: str, name: str, folder: Path, work: Path) -> dict:
    """One route on one model, in this (fresh) process."""
    from ferry.tf1.session import run_tf1
    from tasks.export import call_savedmodel

    spec = spec_for(name, folder, work)
    out = work / "routes" / name
    if route == "freeze":
        try:
            _, seconds = timed(lambda: freeze_route(spec, out / "freeze"))
        except Exception as exc:  # noqa: BLE001 - a route that fails is a result
            return {"seconds": None, "error": _first_line(exc)}
        return {"seconds": seconds}
    try:
        stages, _ = timed(lambda: ferry_route(spec, out))
    except Exception as exc:  # noqa: BLE001 - a model `auto` does not convert is a result
        return {"seconds": None, "converted": False, "error": _first_line(exc)}
    mapping = json.loads(WorkDir(out / "stages").mapping.read_text())
    checks = []
    for shard in spec.shard_paths():
        arrays = load_shard(spec, shard)
        got = call_savedmodel(spec, Path(spec.export.dir), arrays)
        want = run_tf1(spec, arrays, spec.verify.batch_size, "/CPU:0")
        checks += [compare(np.asarray(got[k]), want[k], spec.verify.tolerance_for(k)) for k in want]
    return {"seconds": stages["reconstruct"] + stages["restore"] + stages["export"], "inspect": stages["inspect"],
            "converted": all(c["passed"] for c in checks), "shards": len(spec.shard_paths()),
            "max_abs_err": max(c["max_abs_err"] for c in checks),
            "norm_rel_err": max(c["norm_rel_err"] for c in checks),
            "fallback_ops": sorted(mapping.get("fallback_ops", {}))}


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"


def run(route: str, name: str, folder: Path, work: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", route, name, str(folder), "--work", str(work)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"seconds": None, "converted": False, "error": f"process failed: {done.stderr.strip()[-200:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the fixtures and exports (default: temp)")
    parser.add_argument("--large", action="store_true",
                        help="the large tf_slim nets too (VGG, OverFeat, ResNet-50/101, inception_v3)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these models (e.g. slim_vgg_16)")
    parser.add_argument("--measure", nargs=3, metavar=("ROUTE", "NAME", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ferry-coverage-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.measure:
        route, name, folder = args.measure
        print(json.dumps(measure(route, name, Path(folder), work)))
        return
    models = build(work, args.large, args.only)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"\n{'model':<24}{'converted':>10}{'ferry s':>9}{'freeze s':>9}{'ratio':>7}  "
          "worst shard: max abs err, normwise rel err; fallback ops")
    rows = []
    for name, folder in models.items():
        ferry_run, freeze_run = run("ferry", name, folder, work), run("freeze", name, folder, work)
        rows.append(ferry_run)
        ferry_s, freeze_s = ferry_run["seconds"], freeze_run["seconds"]
        ratio = f"{ferry_s / freeze_s:>7.2f}" if ferry_s and freeze_s else f"{'-':>7}"
        detail = (f"{ferry_run['max_abs_err']:.1e}, {ferry_run['norm_rel_err']:.1e} ({ferry_run['shards']} shards); "
                  f"{', '.join(ferry_run['fallback_ops']) or '-'}"
                  if "max_abs_err" in ferry_run else ferry_run.get("error", ""))
        if freeze_s is None:
            detail += f" (freeze: {freeze_run['error']})"
        print(f"{name:<24}{'yes' if ferry_run.get('converted') else 'no':>10}{_secs(ferry_s):>9}{_secs(freeze_s):>9}"
              f"{ratio}  {detail}", flush=True)
    converted = sum(bool(r.get("converted")) for r in rows)
    fallback = sum(bool(r.get("fallback_ops")) for r in rows if r.get("converted"))
    print(f"\nconverted {converted} / {len(rows)}; {fallback} of them use the fallback layer (ferry.RawOp)")
    print("ferry s: reconstruct + restore + export (both hand-overs written, reloaded, re-checked); freeze s: "
          "restore + convert_variables_to_constants + wrap_function + save; one run each, a fresh process each")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
