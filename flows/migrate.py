"""The flows: a catalogue (the nightly bulk run) and one model (on demand), over the same model task.

Each model is one Prefect task that runs the stages (inspect → reconstruct → restore → verify per
shard → export) in the model's own process; models run concurrently, up to `run.max_parallel`, on
threads here or, with `dask`, on the workers of a Dask cluster.
"""

from __future__ import annotations

import ferry  # noqa: F401  (first: environment defaults for TensorFlow and Prefect)

# isort: split
import contextlib
import logging
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.transactions import CommitMode, transaction

from ferry.isolation import ModelProcess
from ferry.parity import ParityError, agreement, judge
from ferry.review.records import (
    description,
    link_tags,
    log_datasets,
    log_plots,
    log_savedmodel,
    log_stage_files,
    prefect_ui_url,
    register_model,
)
from ferry.review.summary import format_summary, summary_row
from ferry.review.tracking import (
    ModelRecord,
    Run,
    StageFailed,
    attach_run,
    close_abandoned_runs,
    start_catalogue_run,
    start_model_run,
)
from ferry.spec import Catalogue, ModelSpec, RunSettings, load_catalogue, spec_name_hint
from ferry.stages import STAGE_NAMES, Reconstructed, Restored, WorkDir, forced_stages
from tasks.stages import REPORTED, ModelRun


def _no_needless_traceback(record: logging.LogRecord) -> bool:
    """Keep Prefect's log of a failed task to its message when the traceback says nothing: a stage's error
    (raised in the model's process; `tasks.stages.REPORTED`), or a task that returned a Failed state
    (logged with `exc_info` but no exception: `NoneType: None`)."""
    if record.exc_info and (record.exc_info[0] is None or getattr(record.exc_info[1], REPORTED, False)):
        record.exc_info = None
    return True


logging.getLogger("prefect.task_runs").addFilter(_no_needless_traceback)


class CatalogueFailed(RuntimeError):
    """Some models of a catalogue run failed; `rows` is the run's summary."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        failed = [f"{r['model']} at {r['failed_stage']}" for r in rows if r["status"] != "passed"]
        super().__init__(f"{len(failed)} of {len(rows)} models failed: {', '.join(failed)}")

    def __reduce__(self):
        return (CatalogueFailed, (self.rows,))


@flow(name="migrate-catalogue")
def migrate_catalogue(catalogue: str = "specs/catalogue.yaml", only: list[str] | None = None, force: bool = False,
                      force_stage: str | None = None, max_parallel: int | None = None,
                      dask: str | None = None) -> list[dict[str, Any]] | State:
    """Migrate every model of a catalogue (or the `only` ones); one failing model does not stop the others.

    `force` recomputes every stage (`force_stage`: that stage and the ones after it) instead of taking
    cached results; `max_parallel` overrides the catalogue's `run.max_parallel`; `dask` fans the models
    out over a Dask cluster (`tcp://HOST:8786`, or `local:N` for N local worker processes)."""
    return verdict(run_catalogue(catalogue, only, force, force_stage, max_parallel, dask))


@flow(name="migrate-model", flow_run_name="migrate-{model}")
def migrate_model(model: str, catalogue: str = "specs/catalogue.yaml", force: bool = False,
                  force_stage: str | None = None) -> dict[str, Any] | State:
    """Migrate one model of a catalogue (the on-demand deployment)."""
    outcome = verdict(run_catalogue(catalogue, [model], force, force_stage))
    return outcome if isinstance(outcome, State) else outcome[0]


def verdict(rows: list[dict[str, Any]]) -> list[dict[str, Any]] | State:
    """The rows when every model passed; else a Failed state carrying CatalogueFailed (the flow run ends
    Failed, calling the flow raises it) without a traceback in the log: the summary already says why."""
    if all(r["status"] == "passed" for r in rows):
        return rows
    failed = CatalogueFailed(rows)
    return Failed(message=str(failed), data=failed)


def run_catalogue(catalogue: str, only: list[str] | None = None, force: bool = False, force_stage: str | None = None,
                  max_parallel: int | None = None, dask: str | None = None) -> list[dict[str, Any]]:
    """Run the models' tasks, log progress as they finish, end with the summary (printed, a Prefect
    table artifact, the parent MLflow run); the rows name each failed model and stage."""
    logger = get_run_logger()
    forced_stages(force, force_stage)  # a bad stage name fails before any work
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max-parallel: must be at least 1 (got {max_parallel})")
    path = Path(catalogue).resolve()
    cat = load_catalogue(path, only=only)
    for note in close_abandoned_runs(path, cat.experiment):
        logger.warning(note)
    parent = start_catalogue_run(path, cat.experiment, f"{path.stem} {datetime.now():%Y-%m-%d %H:%M}",
                                 {"prefect.flow_run_id": flow_run.id or ""})
    rows = [_record_invalid_spec(parent, cat.experiment, file, problems)
            for file, problems in cat.problems.items()]
    total = len(rows) + len(cat.specs)
    with _task_runner(dask, max_parallel or cat.run.max_parallel) as runner:
        futures = {runner.submit(migrate_one, {"spec": spec, "settings": cat.run, "catalogue": str(path),
                                               "parent_run_id": parent.run_id, "tracking_uri": parent.tracking_uri,
                                               "journal": str(parent.journal.folder),
                                               "experiment": cat.experiment,
                                               "force": force, "force_stage": force_stage}): name
                   for name, spec in cat.specs.items()}
        for future in as_completed(list(futures)):
            outcome = future.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                outcome = getattr(outcome, "row", None) or summary_row(futures[future], "failed", "setup", {}, None,
                                                                       None, f"{type(outcome).__name__}: {outcome}")
            rows.append(outcome)
            logger.info("%s: %s%s — %s", outcome["model"], outcome["status"],
                        f" at {outcome['failed_stage']}" if outcome["failed_stage"] else "", progress(rows, total))
    order = {name: i for i, name in enumerate([spec_name_hint(Path(f)) for f in cat.problems] + list(cat.specs))}
    rows.sort(key=lambda r: order.get(r["model"], len(order)))
    _finish_catalogue(parent, cat, rows)
    if parent.offline:  # the migrations completed; their records wait in the journal
        hint = f"MLflow unreachable: records kept in {parent.journal.folder}; `ferry relog {parent.journal.id}`"
        logger.warning(hint)
        for row in rows:
            row["tracking"] = hint
    return rows


def progress(rows: list[dict[str, Any]], total: int) -> str:
    """`3/7 models done: 2 passed (1 cached), 1 failed`."""
    failed = sum(r["status"] != "passed" for r in rows)
    cached = sum(r["status"] == "passed" and r.get("cached") == "all" for r in rows)
    return f"{len(rows)}/{total} models done: {len(rows) - failed} passed ({cached} cached), {failed} failed"


def _task_runner(dask: str | None, max_parallel: int) -> TaskRunner:
    """Threads here (each model's TensorFlow work is in its own process anyway), or a Dask cluster."""
    if not dask:
        return ThreadPoolTaskRunner(max_workers=max_parallel)
    from prefect_dask import DaskTaskRunner

    if dask.startswith("local:"):
        workers = dask.removeprefix("local:")
        if not workers.isdigit() or int(workers) < 1:
            raise ValueError(f"--dask: local:N needs a number of workers N >= 1 (got {dask!r})")
        return DaskTaskRunner(cluster_kwargs={"n_workers": int(workers), "threads_per_worker": max_parallel,
                                              "processes": True})
    return DaskTaskRunner(address=dask)


@task(name="migrate-one", task_run_name="migrate-{spec.name}", cache_policy=NO_CACHE, persist_result=False)
def migrate_one(spec: ModelSpec, settings: RunSettings, catalogue: str, parent_run_id: str, tracking_uri: str,
                journal: str, experiment: str, force: bool = False,
                force_stage: str | None = None) -> dict[str, Any] | State:
    """Migrate one model of `catalogue` in its own process; its MLflow run is a child of `parent_run_id`
    in the store at `tracking_uri` (the catalogue flow's, wherever this task runs), or in `journal` when
    the store cannot be reached. One run of a model at a time (a lock in its work folder); the model's
    MLflow run is always ended, whatever happens. A failure returns a Failed state carrying StageFailed."""
    model = spec.name
    run = start_model_run(attach_run(tracking_uri, parent_run_id, journal), model, experiment)
    record = ModelRecord(run, model)
    try:
        work = WorkDir.of(Path(catalogue), model)
        with work.lock(get_run_logger().info):
            row, error = _migrate(spec, settings, work, run, record, forced_stages(force, force_stage))
    except BaseException as exc:  # the run must not stay RUNNING; say why it ended
        with contextlib.suppress(Exception):
            record.finish(ok=False, error=f"{type(exc).__name__}: {exc}")
        raise
    if error is not None:
        error.row = row
        return Failed(message=str(error), data=error)
    return row


def _migrate(spec: ModelSpec, settings: RunSettings, work: WorkDir, run: Run, record: ModelRecord,
             force: frozenset[str]) -> tuple[dict[str, Any], StageFailed | None]:
    """The stages, then what the reviewer sees; (the summary row, the stage failure or None)."""
    model = spec.name
    run.params(spec.model_dump(mode="json"))
    run.artifact(spec.spec_file, "spec")
    process = ModelProcess(model, settings.cpu_devices, settings.memory_limit_mb)
    stages = ModelRun(spec, work, process, settings.timeouts, force)
    exported, reconstructed, error = None, None, None
    try:
        # Each stage's result is committed as soon as the stage completes (EAGER): a later stage failing
        # the model must not roll back, and so uncache, the stages that completed.
        with process, transaction(commit_mode=CommitMode.EAGER):
            with record.stage("inspect"):
                inspected = stages.run("inspect", work=work)
                # the serving signature from here on: the spec's, or a SavedModel's own
                spec = stages.spec = spec.with_signature(inspected["inputs"], inspected["outputs"])
                _for_review(run, model, "datasets", log_datasets, spec)
            with record.stage("reconstruct"):
                reconstructed = stages.run("reconstruct", inspected=inspected)
                run.metrics({"model.params": reconstructed["params"]})
            with record.stage("restore"):
                restored = stages.run("restore", reconstructed=reconstructed, inspected=inspected, work=work)
            with record.stage("verify"):
                _verify(stages, reconstructed, restored, run, work)
            with record.stage("export"):
                exported = stages.run("export", reconstructed=reconstructed, restored=restored,
                                      shard=spec.shards()[0])
                log_savedmodel(run, Path(exported["path"]), work, cached=stages.states["export"] == "Cached")
    except StageFailed as exc:
        error = exc
    cached = _cached(stages.states)
    log_stage_files(run, work, record.durations)
    _for_review(run, model, "plots", log_plots, spec, work, record.durations)
    row = summary_row(model, "passed" if error is None else "failed", record.failed_stage, record.durations, work,
                      exported["path"] if exported else None, error.cause if error else None, cached)
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"  # where the model's task ran (Dask: which worker)
    tags = link_tags(spec, stages.task_runs)
    tags.update({"cached_stages": cached, "mlflow.note.content": description(spec, row, tags["checkpoint.sha256"])})
    if error is None:  # only a migration that passed is handed over
        _for_review(run, model, "registry", register_model, spec, reconstructed, exported, tags)
    record.finish(ok=error is None, error=str(error) if error else None, tags=tags)
    return row, error


def _for_review(run: Run, model: str, what: str, fn, *args) -> None:
    """Log something for the reviewer (plots, the registration); its failure is recorded on the run
    (tag `<what>.error`) and in the log, and never fails a migration that is otherwise complete."""
    try:
        fn(run, *args)
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("%s: %s failed: %s", model, what, exc)
        run.tags({f"{what}.error": f"{type(exc).__name__}: {exc}"[:5000]})


def _verify(stages: ModelRun, reconstructed: Reconstructed, restored: Restored, run: Run, work: WorkDir) -> None:
    """One task per shard, run concurrently in the model's process; every shard's parity is logged
    (shard index as step) before judging."""
    shards = stages.spec.shards()
    if not shards:
        raise ValueError(f"{stages.spec.spec_file}: verify.shards: no file matches {stages.spec.verify.shards!r}")

    def one(index: int, shard: str) -> Any:
        try:
            return stages.run("verify", label=f"verify-shard-{index}", reconstructed=reconstructed,
                              restored=restored, shard=shard, index=index, work=work)
        except ParityError as exc:
            return exc.record
        except Exception as exc:  # noqa: BLE001 - the verdict lists every shard's error
            return exc

    with ThreadPoolExecutor(max_workers=len(shards)) as pool:  # each shard in a copy of this run's context
        outcomes = [f.result() for f in [pool.submit(copy_context().run, one, i, s) for i, s in enumerate(shards)]]
    records = [o for o in outcomes if isinstance(o, dict)]
    errors = [f"shard {i}: {type(o).__name__}: {o}" for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    run.metric_steps({record["index"]: {f"parity.{name}.{k}": v for name, out in record["outputs"].items()
                                        for k, v in out.items() if k in _PARITY_METRICS} for record in records})
    run.metrics({f"agreement.{name}.{k}": v for name, top in agreement(records).items() for k, v in top.items()})
    judge(records, errors, work.parity)


_PARITY_METRICS = ("max_abs_err", "mean_abs_err", "max_rel_err", "norm_rel_err", "argmax_agreement", "top5_agreement")


def _cached(states: dict[str, str]) -> str:
    """Which stage tasks were taken from the cache: `all`, none (``), or their labels."""
    cached = [label for label, state in states.items() if state == "Cached"]
    if cached and len(cached) == len(states) and "export" in states:
        return "all"
    return ",".join(cached)


def _finish_catalogue(parent: Run, cat: Catalogue, rows: list[dict[str, Any]]) -> None:
    """The summary: printed, a Prefect table artifact, and the parent MLflow run's table and status."""
    get_run_logger().info("summary\n%s", format_summary(rows))
    parent.table({k: [r.get(k) for r in rows] for k in rows[0]} if rows else {}, "summary.json")
    parent.text(format_summary(rows), "summary.txt")
    create_table_artifact(rows, key=artifact_key(cat.path), description=f"ferry migration summary of {cat.path}")
    passed = sum(r["status"] == "passed" for r in rows)
    parent.metrics({"models.passed": passed, "models.total": len(rows),
                    "models.cached": sum(r.get("cached") == "all" for r in rows)})
    ok = passed == len(rows)
    failed = [f"`{r['model']}` at {r['failed_stage']}" for r in rows if r["status"] != "passed"]
    note = (f"Catalogue `{cat.path}`: {len(rows)} models, {passed} passed"
            + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")
            + f"; {sum(r.get('cached') == 'all' for r in rows)} taken wholly from the cache."
            + f"\n\nPrefect flow run: {prefect_ui_url() or flow_run.id}. One nested run per model.")
    parent.tags({"status": "passed" if ok else "failed", "mlflow.note.content": note,
                 "prefect.flow_run_id": flow_run.id or "", "prefect.flow_run_url": prefect_ui_url()})
    parent.end(ok)


def artifact_key(catalogue: Path) -> str:
    """The Prefect artifact key of a catalogue's summary (lowercase letters, digits and dashes)."""
    return "ferry-summary-" + re.sub(r"[^a-z0-9-]+", "-", catalogue.stem.lower()).strip("-")


def _record_invalid_spec(parent: Run, experiment: str, file: str, problems) -> dict[str, Any]:
    """An invalid spec fails its model at stage `spec`; its run holds the problems."""
    name = spec_name_hint(Path(file))
    run = start_model_run(parent, name, experiment)
    run.text("\n".join(str(p) for p in problems), "problems.txt")
    run.tags({"status": "failed", "failed_stage": "spec", "error": "; ".join(str(p) for p in problems)[:5000]})
    run.end(False)
    return summary_row(name, "failed", "spec", {}, None, None, "; ".join(str(p) for p in problems))


__all__ = ["STAGE_NAMES", "CatalogueFailed", "migrate_catalogue", "migrate_model", "run_catalogue"]
