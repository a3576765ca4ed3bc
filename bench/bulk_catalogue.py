"""Benchmark: what orchestration costs on a bulk catalogue of small models, and what the cache saves.

    .venv/bin/python bench/bulk_catalogue.py [--models 20] [--keep]

Builds the example zoo (zoo/build.py, its own process) and a catalogue of N specs cycling over
specs/models/*.yaml (unique names and export folders), all in one fresh temporary folder that also
holds the MLflow store (MLFLOW_TRACKING_URI), the Prefect home (PREFECT_HOME: its own ephemeral
server database) and ferry's `.ferry/work` (the folder has no pyproject.toml/.git above it, so the
catalogue's folder is the project root). Then, in this one process, times:

  server  a trivial flow: Prefect's ephemeral server start + its database migrations (paid once)
  cold    migrate_catalogue(catalogue), empty work/cache state: flow, N model tasks, stage tasks, MLflow
          runs, model processes (forked from ferry's zygote, whose TensorFlow import is included);
          models run run.max_parallel at a time (the catalogue's default)
  cached  the same flow again: every stage task must end `Cached` (checked on the summary rows); ferry's
          in-memory file digests are dropped first, as a rerun is a new process (the on-disk memo stays)
  serial  the flow once more with force=True, max_parallel=1: cold work one model at a time, zygote up,
          to compare like for like with the plain loop
  plain   the stage functions (inspect, reconstruct, restore, verify per shard, export) in a plain
          loop here: no Prefect, no MLflow, no processes, one model at a time (TF import included)

and prints seconds, cached/cold (goal < 0.10) and the orchestration overhead per model,
(cold - plain) / N (goal < 1 s). Exits non-zero if a model fails or the rerun is not fully cached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def build_zoo(out: Path) -> None:
    """The example TF1 models, written by zoo/build.py in its own process (as tests/conftest.py does)."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, str(REPO / "zoo" / "build.py"), "--out", str(out)], env=env, check=True,
                   capture_output=True)


def write_catalogue(root: Path, n: int) -> Path:
    """`root/specs/`: the example catalogue and factories, and n specs cycling over the example specs.

    The layout mirrors the repository's (specs/models -> ../../zoo), so the specs' relative paths hold."""
    import yaml

    specs = root / "specs"
    shutil.copytree(REPO / "specs" / "factories", specs / "factories", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "specs" / "catalogue.yaml", specs / "catalogue.yaml")
    (specs / "models").mkdir()
    examples = sorted((REPO / "specs" / "models").glob("*.yaml"))
    for i in range(n):
        spec = yaml.safe_load(examples[i % len(examples)].read_text())
        spec["name"] = f"{spec['name']}_{i:02d}"
        spec["export"]["dir"] = f"../../exports/{spec['name']}"
        (specs / "models" / f"{spec['name']}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return specs / "catalogue.yaml"


def run_flow(catalogue: Path, **options) -> list[dict]:
    from flows.migrate import migrate_catalogue

    outcome = migrate_catalogue(str(catalogue), return_state=True, **options).result(raise_on_failure=False)
    if isinstance(outcome, BaseException):
        sys.exit(f"bench: the catalogue run failed: {outcome}")
    return outcome


def plain_loop(catalogue: Path, out: Path) -> tuple[float, float]:
    """The stage functions, called directly; returns (TensorFlow import seconds, stage seconds)."""
    from ferry.spec import load_catalogue
    from ferry.stages import WorkDir

    start = time.perf_counter()
    from tasks.export import export_savedmodel
    from tasks.inspect import inspect_graph
    from tasks.reconstruct import reconstruct
    from tasks.restore import restore_weights
    from tasks.verify import verify_shard

    t_import = time.perf_counter() - start
    start = time.perf_counter()
    for name, spec in load_catalogue(catalogue).specs.items():
        work = out / "work" / name
        work.mkdir(parents=True)
        spec = spec.model_copy(update={"export": spec.export.model_copy(update={"dir": out / "exports" / name})})
        inspected = inspect_graph(spec, WorkDir(work))
        info = reconstruct(spec, inspected)
        restored = restore_weights(spec, info, inspected, WorkDir(work))
        shards = spec.shard_paths()
        for index, shard in enumerate(shards):
            verify_shard(spec, info, restored, shard, index)
        export_savedmodel(spec, info, restored, shards[0])
    return t_import, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20, help="catalogue size (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ferry-bulk-")).resolve()
    # Before Prefect and MLflow are imported: all state lives in the temporary folder (ferry's zygote
    # folder too), nowhere else.
    tempfile.tempdir = str(root)
    os.environ.update(TMPDIR=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
                      PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.pop("PREFECT_API_URL", None)
    try:
        return bench(root, args.models)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def bench(root: Path, n: int) -> int:
    _, t_zoo = timed(lambda: build_zoo(root / "zoo"))
    catalogue = write_catalogue(root, n)
    subprocess.run([str(Path(sys.executable).parent / "ferry"), "validate", str(catalogue)], check=True,
                   stdout=subprocess.DEVNULL)

    from prefect import flow

    import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
    from ferry import cache
    from ferry.files import project_root
    from ferry.spec import load_catalogue

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        pass

    load_before = os.getloadavg()[0]  # other jobs on the machine skew every row
    _, t_server = timed(warm_up)
    cold_rows, t_cold = timed(lambda: run_flow(catalogue))
    cache._MEMO.clear()  # a rerun is a new process: no file digests in memory (the on-disk memo stays)
    cached_rows, t_cached = timed(lambda: run_flow(catalogue))
    _, t_serial = timed(lambda: run_flow(catalogue, force=True, max_parallel=1))
    t_import, t_plain = plain_loop(catalogue, root / "plain")

    ferry_dir = project_root(catalogue) / ".ferry"
    max_parallel = load_catalogue(catalogue).run.max_parallel
    not_cached = [f"{r['model']} ({r['cached'] or 'none'})" for r in cached_rows if r.get("cached") != "all"]
    stage_seconds = sum(r["seconds"] for r in cold_rows)

    print(f"\nbulk catalogue: {n} models cycling over specs/models/*.yaml; {os.cpu_count()} CPUs "
          f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after); "
          f"run.max_parallel {max_parallel} (catalogue default)")
    print(f"temp folder {root} (zoo built in {t_zoo:.0f} s); ferry's work/cache in {ferry_dir} "
          f"({'inside' if ferry_dir.is_relative_to(REPO) else 'outside'} the repository)")
    print(f"\n{'run':<72}{'seconds':>9}{'per model':>11}{'ratio':>8}")
    rows = [("Prefect ephemeral server start (trivial flow, not in the rows below)", t_server, None),
            ("cold: migrate_catalogue, empty cache (incl. zygote TF import)", t_cold, 1.0),
            ("cached rerun: migrate_catalogue again (no model process)", t_cached, t_cached / t_cold),
            ("cold, serial: force=True, max_parallel=1 (zygote already up)", t_serial, t_serial / t_cold),
            (f"plain loop of the stage functions (incl. {t_import:.1f} s TF import)", t_import + t_plain,
             (t_import + t_plain) / t_cold)]
    for label, seconds, ratio in rows:
        print(f"{label:<72}{seconds:>9.2f}{seconds / n:>11.2f}" + (f"{ratio:>8.2f}" if ratio is not None else ""))
    overhead = (t_cold - t_import - t_plain) / n
    ok_ratio, ok_overhead = t_cached / t_cold < 0.10, overhead < 1.0
    print(f"\ncached / cold                   {t_cached / t_cold:6.3f}    goal < 0.10  "
          f"{'met' if ok_ratio else 'MISSED'}")
    print(f"orchestration overhead / model  {overhead:6.2f} s  goal < 1 s   {'met' if ok_overhead else 'MISSED'}"
          f"  (cold - plain) / {n}: cold runs {max_parallel} models at once, plain one")
    print(f"  same, like for like           {(t_serial - t_plain) / n:6.2f} s"
          "                (cold serial - plain without TF import) / N: one model at a time, TF imported")
    print(f"cached rerun / model            {t_cached / n:6.2f} s")
    print(f"cold run's stage seconds as the flow timed them, summed over models: {stage_seconds:.1f}")
    if ferry_dir.is_relative_to(REPO):
        print(f"\n!!! WARNING: ferry wrote its work folder into the repository: {ferry_dir}", file=sys.stderr)
        return 1
    if not_cached:
        print(f"\n!!! WARNING: the rerun was not fully cached: {', '.join(not_cached)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
