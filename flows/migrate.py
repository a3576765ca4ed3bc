"""The flows: one model (inspect → reconstruct → restore → verify per shard → export), and a catalogue."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait

from ferry.paths import work_dir
from ferry.report import format_summary, summary_row
from ferry.spec import load_catalogue, spec_name_hint
from ferry.tracking import ModelRecord, Run, StageFailed, attach_run, start_catalogue_run, start_model_run
from tasks.export import export_savedmodel
from tasks.inspect import inspect_graph
from tasks.reconstruct import reconstruct
from tasks.restore import restore_weights
from tasks.verify import ParityError, judge, verify_shard


class CatalogueFailed(RuntimeError):
    """Some models of a catalogue run failed; `rows` is the run's summary."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows
        failed = [f"{r['model']} at {r['failed_stage']}" for r in rows if r["status"] != "passed"]
        super().__init__(f"{len(failed)} of {len(rows)} models failed: {', '.join(failed)}")


@flow(name="migrate-model", flow_run_name="migrate-{model}")
def migrate_model(catalogue: str, model: str, parent_run_id: str) -> dict[str, Any]:
    """Migrate one model of `catalogue`, logged as a child of MLflow run `parent_run_id`."""
    spec = load_catalogue(Path(catalogue), only=[model]).specs[model]
    run = start_model_run(attach_run(Path(catalogue), parent_run_id), model)
    record = ModelRecord(run, model)
    work = work_dir(Path(catalogue), model, fresh=True)
    run.params(spec.model_dump(mode="json"))
    run.artifact(spec.spec_file, "spec")
    passed, error = False, None
    try:
        with record.stage("inspect"):
            inventory = inspect_graph(spec, work)
        with record.stage("reconstruct"):
            model_info = reconstruct(spec, inventory)
            run.metrics({"model.params": model_info["params"]})
        with record.stage("restore"):
            restored = restore_weights(spec, model_info, work)
        with record.stage("verify"):
            _verify(spec, model_info, restored["weights"], run, work)
        with record.stage("export"):
            exported = export_savedmodel(spec, model_info, restored["weights"], spec.shard_paths()[0])
            run.artifact(Path(exported["path"]), "savedmodel")
        passed = True
        return summary_row(model, "passed", None, record.durations, work, exported["path"])
    except StageFailed as exc:
        error = str(exc)
        exc.row = summary_row(model, "failed", exc.stage, record.durations, work, None, exc.cause)
        raise
    finally:
        _log_stage_files(run, work)
        record.finish(ok=passed, error=error)


def _verify(spec, model_info: dict[str, Any], weights: str, run: Run, work: Path) -> dict[str, Any]:
    """One task per shard; every shard's parity is logged (shard index as step) before judging."""
    shards = spec.shard_paths()
    futures = [verify_shard.submit(spec, model_info, weights, shard, i, len(shards)) for i, shard in enumerate(shards)]
    wait(futures)
    records, errors = [], []
    for future in futures:
        state = future.state
        value = state.result(raise_on_failure=False)
        if isinstance(value, ParityError):
            value = value.record
        if isinstance(value, BaseException):
            errors.append(f"{type(value).__name__}: {value}")
            continue
        records.append(value)
        for name, out in value["outputs"].items():
            run.metrics({f"parity.{name}.{k}": v for k, v in out.items() if k in _PARITY_METRICS},
                        step=value["index"])
    return judge(records, errors, work / "parity.json")


_PARITY_METRICS = ("max_abs_err", "mean_abs_err", "max_rel_err", "norm_rel_err", "argmax_agreement")


def _log_stage_files(run: Run, work: Path) -> None:
    """Log what the stages wrote: inventory, name map (as a table), parity report."""
    if (work / "inventory.json").exists():
        run.artifact(work / "inventory.json")
    if (work / "mapping.json").exists():
        mapping = json.loads((work / "mapping.json").read_text())
        run.table(mapping["table"], "name_map.json")
        run.metrics({f"coverage.{k}": v for k, v in mapping["coverage"].items()})
    if (work / "parity.json").exists():
        run.artifact(work / "parity.json")


@flow(name="migrate-catalogue")
def migrate_catalogue(catalogue: str = "specs/catalogue.yaml", only: list[str] | None = None) -> list[dict[str, Any]]:
    """Migrate every model of a catalogue; one failing model does not stop the others."""
    logger = get_run_logger()
    path = Path(catalogue).resolve()
    cat = load_catalogue(path, only=only)
    parent = start_catalogue_run(path, cat.tracking.experiment, f"{path.stem} {datetime.now():%Y-%m-%d %H:%M}")
    rows = [_record_invalid_spec(parent, file, problems) for file, problems in cat.problems.items()]
    total = len(rows) + len(cat.specs)
    for name in cat.specs:
        logger.info("model %d/%d: %s", len(rows) + 1, total, name)
        state = migrate_model(str(path), name, parent.run_id, return_state=True)
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            outcome = getattr(outcome, "row", None) or summary_row(name, "failed", "flow", {}, None, None, outcome)
        rows.append(outcome)
        failed = sum(r["status"] != "passed" for r in rows)
        logger.info("progress: %d/%d models done, %d passed, %d failed", len(rows), total, len(rows) - failed, failed)
    parent.table({k: [r.get(k) for r in rows] for k in rows[0]} if rows else {}, "summary.json")
    parent.text(format_summary(rows), "summary.txt")
    create_table_artifact(rows, key=artifact_key(cat.path), description=f"ferry migration summary of {cat.path}")
    parent.metrics({"models.passed": sum(r["status"] == "passed" for r in rows), "models.total": len(rows)})
    ok = all(r["status"] == "passed" for r in rows)
    parent.tags({"status": "passed" if ok else "failed"})
    parent.end(ok)
    logger.info("summary\n%s", format_summary(rows))
    if not ok:
        raise CatalogueFailed(rows)
    return rows


def artifact_key(catalogue: Path) -> str:
    """The Prefect artifact key of a catalogue's summary (lowercase letters, digits and dashes)."""
    return "ferry-summary-" + re.sub(r"[^a-z0-9-]+", "-", catalogue.stem.lower()).strip("-")


def _record_invalid_spec(parent: Run, file: str, problems) -> dict[str, Any]:
    """An invalid spec fails its model at stage `spec`; its run holds the problems."""
    name = spec_name_hint(Path(file))
    run = start_model_run(parent, name)
    run.text("\n".join(str(p) for p in problems), "problems.txt")
    run.tags({"status": "failed", "failed_stage": "spec"})
    run.end(False)
    return summary_row(name, "failed", "spec", {}, None, None, "; ".join(str(p) for p in problems))
