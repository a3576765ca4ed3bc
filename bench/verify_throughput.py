"""Benchmark: ferry's verification against the bare cost of the two forward passes, side by side.

    python bench/verify_throughput.py [--shards 8] [--rows 4] [--work DIR]

On tf_slim's `resnet_v1_50` (zoo/slim_nets.py, 25.6 M parameters, 224x224 images), with N shards of R
images each, each measurement in a fresh process of its own:

  ferry   the verify stage as a model process runs it: `tasks.verify.verify_shard` on every shard, the
          shards submitted at once from threads as the flow does (the TF1 reference and the Keras
          model made once per process, batches streamed, the Keras forward compiled)
  bare    by hand in one process: import the graph and restore the checkpoint in a Session, build the
          Keras model and load its weights, a `tf.function` forward, both sides over the same batches

and the peak resident memory of the ferry process with 2 shards and with N (flat: memory holds one batch
per device, not the data set). Prints seconds, the ratio bare/ferry (1.0 = no overhead) and the peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NAME = "slim_resnet_v1_50"


def prepare(work: Path, shards: int, rows: int) -> dict:
    """The net (built once), its spec, restored weights, and `shards` shards of `rows` images."""
    import numpy as np

    from bench.auto_resnet50 import build, spec_for
    from ferry.stages import WorkDir
    from tasks.inspect import inspect_graph
    from tasks.reconstruct import reconstruct
    from tasks.restore import restore_weights

    folder = build(work)
    data = work / f"data-{rows}"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(max(shards, 8)):
        path = data / f"shard-{i:03d}.npz"
        if not path.exists():
            np.savez(path, images=rng.uniform(size=(rows, 224, 224, 3)).astype(np.float32))
    spec = spec_for(folder, work)
    spec = spec.model_copy(update={"verify": spec.verify.model_copy(update={"shards": str(data / "*.npz")})})
    stages = WorkDir(work / "stages")
    inspected = inspect_graph(spec, stages)
    reconstructed = reconstruct(spec, inspected)
    restored = restore_weights(spec, reconstructed, inspected, stages)
    state = {"spec": spec.model_dump(mode="json"), "spec_file": str(spec.spec_file), "reconstructed": reconstructed,
             "restored": restored}
    (work / "state.json").write_text(json.dumps(state, default=str))
    return state


def measure(mode: str, work: Path, shards: int) -> dict:
    """One measurement, in this (fresh) process."""
    from ferry.spec import ModelSpec

    state = json.loads((work / "state.json").read_text())
    spec = ModelSpec.model_validate({**state["spec"], "spec_file": state["spec_file"]})
    paths = spec.shard_paths()[:shards]
    start = time.perf_counter()
    if mode == "ferry":
        from tasks.verify import verify_shard

        with ThreadPoolExecutor(len(paths)) as pool:
            records = list(pool.map(lambda ip: verify_shard(spec, state["reconstructed"], state["restored"],
                                                            str(ip[1]), ip[0]), enumerate(paths)))
        assert all(r["passed"] for r in records)
    else:
        bare(spec, state, paths)
    took = time.perf_counter() - start
    return {"seconds": took, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bare(spec, state: dict, paths: list[Path]) -> None:
    """The two forward passes by hand: a Session with the restored graph, a compiled Keras forward."""
    import numpy as np
    import tensorflow as tf

    from ferry.keras3.build import model_from_info

    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(str(spec.source.meta), clear_devices=True)
        feed, fetch = graph.get_tensor_by_name("images:0"), graph.get_tensor_by_name("probs:0")
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        saver.restore(session, str(spec.source.checkpoint_prefix))
    model = model_from_info(spec, state["reconstructed"])
    model.load_weights(state["restored"]["weights"])
    forward = tf.function(lambda x: model(x, training=False),
                          input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32)])
    for path in paths:
        with np.load(path) as data:
            images = data["images"]
        for start in range(0, len(images), spec.verify.batch_size):
            batch = images[start:start + spec.verify.batch_size]
            session.run(fetch, {feed: batch})
            np.asarray(forward(tf.constant(batch)))


def run(mode: str, work: Path, shards: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--measure", mode, "--work", str(work), "--shards", str(shards)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each measurement (alternating)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--measure", choices=["ferry", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ferry-bench-verify-"))
    if args.measure:
        print(json.dumps(measure(args.measure, work, args.shards)))
        return
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                    f"from bench.verify_throughput import prepare; from pathlib import Path; "
                    f"prepare(Path({str(work)!r}), {args.shards}, {args.rows})"], check=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times: dict[str, list[float]] = {"ferry": [], "bare": []}
    for _ in range(args.repeat):
        for mode in ("ferry", "bare"):
            times[mode].append(run(mode, work, args.shards)["seconds"])
    small, full = run("ferry", work, 2), run("ferry", work, args.shards)
    ferry_s, bare_s = statistics.median(times["ferry"]), statistics.median(times["bare"])
    print(f"resnet_v1_50, {args.shards} shards x {args.rows} images, batch 4 (median of {args.repeat}):")
    print(f"  {'ferry verify':<28}{ferry_s:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times['ferry'])})")
    print(f"  {'bare forward passes':<28}{bare_s:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times['bare'])})")
    print(f"  ratio bare / ferry: {bare_s / ferry_s:.2f}   (goal >= 0.85)")
    print(f"  peak RSS, ferry: {small['peak_mb']:.0f} MB with 2 shards, {full['peak_mb']:.0f} MB with {args.shards} "
          f"(ratio {full['peak_mb'] / small['peak_mb']:.2f}; goal: flat)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
