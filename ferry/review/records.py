"""What a reviewer sees of one model's migration in MLflow, beyond metrics: links back to Prefect and
to the exact inputs, a short description with the verdict, the shards as dataset inputs, plots."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import ferry
from ferry.cache import build_id, fingerprint
from ferry.data import peek, shard_file, shard_stem
from ferry.divergence import table as divergence_table
from ferry.export_dir import keras_file, read_marker, savedmodel_entries
from ferry.files import write_atomically
from ferry.review.tracking import Run
from ferry.sources import FORMATS
from ferry.spec import ModelSpec
from ferry.stages import Exported, Reconstructed, WorkDir


def checkpoint_fingerprint(spec: ModelSpec) -> str:
    """One sha256 over the files the weights come from (a checkpoint's `.index`, `.data-*`; a frozen
    graph's `.pb`), by name and content."""
    digest = hashlib.sha256()
    for file in FORMATS[spec.source.format].weight_files(spec.source):
        digest.update(f"{file.name}\0{fingerprint(file)}\n".encode())
    return digest.hexdigest()


def link_tags(spec: ModelSpec, task_runs: dict[str, str]) -> dict[str, str]:
    """Tags tying the run to its Prefect runs, its spec file and content, its checkpoint, ferry's build."""
    from prefect.runtime import flow_run, task_run

    tags = {"prefect.flow_run_id": flow_run.id or "", "prefect.flow_run_url": prefect_ui_url(),
            "prefect.task_run_id": task_run.id or "", "spec.file": str(spec.spec_file),
            "spec.sha256": fingerprint(spec.spec_file), "source.format": spec.source.format,
            f"source.{spec.source.format}": str(spec.source.artifact),
            "source.checkpoint": str(spec.source.checkpoint_prefix or ""),
            "checkpoint.sha256": checkpoint_fingerprint(spec),
            "ferry.version": ferry.__version__, "ferry.build": build_id()}
    tags.update({f"prefect.task_run.{label}": run_id for label, run_id in task_runs.items()})
    return tags


def prefect_ui_url() -> str:
    """The flow run's page in the Prefect UI; empty on the ephemeral server (it serves no UI)."""
    from prefect.runtime import flow_run

    url = flow_run.ui_url or ""
    return url if url.startswith("http") else ""


def description(spec: ModelSpec, row: dict[str, Any], checkpoint_sha: str) -> str:
    """The run's description (`mlflow.note.content`): what was migrated, from what, and the verdict."""
    src = spec.source
    weights = f" with checkpoint `{src.checkpoint_prefix}`" if src.checkpoint_prefix else " (weights as constants)"
    lines = [f"**{spec.name}**: TF1 {src.format.replace('_', ' ')} `{src.artifact.name}`{weights} (sha256 "
             f"`{checkpoint_sha[:12]}`) → Keras 3 SavedModel and `.keras`, by ferry {ferry.__version__}.", ""]
    if row["status"] == "passed":
        lines.append(f"Verdict: **passed**. Coverage {_percent(row['coverage'])} of the model's weights; worst "
                     f"abs error {_sci(row['worst_abs_err'])}, worst normwise relative error "
                     f"{_sci(row['worst_rel_err'])}, within atol {spec.verify.tolerance.atol:g} / rtol "
                     f"{spec.verify.tolerance.rtol:g}. SavedModel: `{row['export']}`.")
    else:
        lines.append(f"Verdict: **failed at {row['failed_stage']}**: {row['error']}")
    if row.get("cached"):
        lines.append(f"\nTaken from ferry's cache: {row['cached']}.")
    return "\n".join(lines)


def log_datasets(run: Run, spec: ModelSpec) -> None:
    """The verification shards as the run's dataset inputs (digest, schema, source path)."""
    import mlflow.data

    inputs = []
    for index, shard in enumerate(spec.shards()):
        arrays = peek(spec, shard)  # numpy and plain Python: the flow process imports no TensorFlow
        with warnings.catch_warnings():  # MLflow registers two equal local-file source classes and says so
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(arrays, source=str(shard_file(shard)),
                                             name=f"{spec.name}-{shard_stem(shard)}")
        entity = dataset._to_mlflow_entity()
        inputs.append({**{k: getattr(entity, k) for k in ("name", "digest", "source_type", "source", "schema",
                                                           "profile")},
                       "tags": {"mlflow.data.context": "verification", "shard": str(index)}})
    if inputs:
        run.datasets(inputs)


def log_plots(run: Run, spec: ModelSpec, work: WorkDir, attempted: dict[str, float]) -> None:
    """Per output an error histogram and a TF1-vs-Keras scatter (all shards); the coverage chart; the error per
    layer of a failing shard (`divergence.png`)."""
    from ferry.review.plots import coverage_chart, divergence_chart, parity_plots

    folder = work.plots
    if folder.exists():
        for old in folder.iterdir():
            old.unlink()
    made: list[Path] = []
    if "restore" in attempted and work.mapping.exists():
        made.append(coverage_chart(json.loads(work.mapping.read_text())["table"], folder))
    if "verify" in attempted and work.parity.exists():
        first = json.loads(work.parity.read_text()).get("first_divergence")
        if first is not None:
            made.append(divergence_chart(first, folder))
    files = [work.shard_outputs(i) for i in range(len(spec.shards()))] if "verify" in attempted else []
    files = [f for f in files if f.exists()]
    if files:
        loaded = []
        for file in files:
            with np.load(file) as data:
                loaded.append({key: data[key] for key in data.files})
        for name in spec.source.outputs:
            reference = np.concatenate([d[f"{name}.reference"].ravel() for d in loaded])
            candidate = np.concatenate([d[f"{name}.candidate"].ravel() for d in loaded])
            if reference.shape != candidate.shape:  # parity.json already says why; nothing to draw
                continue
            tol = spec.verify.tolerance_for(name)
            made += parity_plots(reference, candidate, name, folder, tol.atol, tol.rtol)
    if made:
        run.artifact(folder, "plots")


def log_savedmodel(run: Run, path: Path, work: WorkDir, cached: bool) -> None:
    """Log the export: the SavedModel under `savedmodel/`, the Keras model under `keras/<name>.keras`, and
    the tag `keras.portable` (its marker says); a cached export points at the run that logged its files
    instead of copying them again (tag `savedmodel.run_id`)."""
    keras = (read_marker(path) or {}).get("keras", {})
    run.tags({"keras.portable": _flag(keras.get("portable")),
              "keras.non_portable": ", ".join(keras.get("non_portable", []))})
    marker = work.savedmodel_run
    if cached and marker.exists():
        run.tags({"savedmodel.run_id": marker.read_text()})
        return
    for entry in savedmodel_entries(path):
        run.artifact(entry, "savedmodel" if entry.is_file() else f"savedmodel/{entry.name}")
    if (file := keras_file(path)) is not None:
        run.artifact(file, "keras")
    run.tags({"savedmodel.run_id": run.run_id})
    write_atomically(marker, run.run_id)


def log_stage_files(run: Run, work: WorkDir, attempted: dict[str, float]) -> None:
    """Log what this run's stages wrote (files of stages not reached may be an earlier run's)."""
    if "inspect" in attempted and work.inventory.exists():
        run.artifact(work.inventory)
    if "restore" in attempted and work.mapping.exists():
        mapping = json.loads(work.mapping.read_text())
        run.table(mapping["table"], "name_map.json")
        run.metrics({f"coverage.{k}": v for k, v in mapping["coverage"].items()})
        if fallbacks := mapping.get("fallback_ops"):  # `auto` ran these op types as raw TF ops (`ferry.RawOp`)
            listed = ", ".join(sorted(fallbacks))
            run.params({"auto.fallback_ops": listed})
            run.tags({"auto.fallback_ops": listed})
    if "verify" in attempted and work.parity.exists():
        run.artifact(work.parity)
        first = json.loads(work.parity.read_text()).get("first_divergence")
        if first is not None:  # per compared layer: keras layer, tf1 tensor, errors
            run.table(divergence_table(first), "first_divergence.json")
            run.tags({"parity.first_divergence": first["layer"] or "none found"})


def register_model(run: Run, spec: ModelSpec, reconstructed: Reconstructed, exported: Exported,
                   tags: dict[str, str]) -> None:
    """Register the export (SavedModel and `.keras`) under the spec's name (alias `migrated`), unless that
    version is this very export already (a cached rerun). Only for a model that passed."""
    savedmodel_sha = exported["files"][exported["path"]]
    current = migrated_version(run, spec.name)
    if current is not None and current.tags.get("savedmodel.sha256") == savedmodel_sha:
        run.tags({"registry.version": f"{spec.name}/{current.version}"})
        return
    run.register(spec.name, exported["path"], reconstructed["inputs"], list(spec.source.outputs),
                 spec.shards()[0],
                 {"checkpoint.sha256": tags["checkpoint.sha256"], "spec.sha256": tags["spec.sha256"],
                  "verdict": "passed", "ferry.version": ferry.__version__,
                  f"source.{spec.source.format}": str(spec.source.artifact),
                  "mlflow.run_id": run.run_id, "savedmodel.sha256": savedmodel_sha,
                  "keras.portable": _flag(exported.get("keras", {}).get("portable"))},
                 data={"format": spec.verify.format, "options": spec.verify.data.model_dump()})



def migrated_version(run: Run, name: str):
    """The registered version aliased `migrated`, or None (none yet, or the store is out of reach)."""
    if run.offline:
        return None
    try:
        return run.client.get_model_version_by_alias(name, "migrated")
    except Exception:  # noqa: BLE001 - no such model or alias
        return None


def _flag(value: Any) -> str:
    """A boolean as a tag value: `true`/`false` (missing is `false`: never assumed)."""
    return "true" if value is True else "false"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"
