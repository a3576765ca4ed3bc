"""MLflow records: one parent run per catalogue run, one nested run per model.

Uses `MlflowClient` with explicit run ids (no fluent active-run stack), so model runs can be
logged from any thread. Default store: `mlflow.db` (SQLite) at the project root;
`MLFLOW_TRACKING_URI` in the environment overrides it.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import ferry
from ferry.paths import project_root

PARAM_MAX = 6000  # MLflow's limit on one param value


def tracking_uri(catalogue: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite file at the catalogue's project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root(catalogue) / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (not in the working directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class Run:
    """One MLflow run, logged through explicit ids."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def params(self, values: dict[str, Any]) -> None:
        params = [Param(k, _param_value(v)) for k, v in flatten(values).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        self.metric_steps({step: values})

    def metric_steps(self, steps: dict[int, dict[str, float]]) -> None:
        """Metrics of several steps (e.g. one per shard) in one call."""
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for step, values in steps.items()
                   for k, v in values.items() if v is not None]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def tags(self, values: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), folder)
        else:
            self.client.log_artifact(self.run_id, str(path), folder)

    def text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def table(self, columns: dict[str, list], name: str) -> None:
        self.client.log_table(self.run_id, data=columns, artifact_file=name)

    def end(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def start_catalogue_run(catalogue: Path, experiment: str, run_name: str) -> Run:
    """Create the experiment if needed and open the catalogue's parent run."""
    uri = tracking_uri(catalogue)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment, _artifact_root(uri))
    run = client.create_run(experiment_id, run_name=run_name, tags={"ferry.version": ferry.__version__,
                                                                    "ferry.catalogue": str(catalogue)})
    return Run(client, run.info.run_id)


def start_model_run(parent: Run, model: str) -> Run:
    """Open a model's run nested under the catalogue run."""
    experiment_id = parent.client.get_run(parent.run_id).info.experiment_id
    run = parent.client.create_run(experiment_id, run_name=model, tags={
        MLFLOW_PARENT_RUN_ID: parent.run_id, MLFLOW_RUN_NAME: model, "ferry.version": ferry.__version__,
        "env.TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "")})
    return Run(parent.client, run.info.run_id)


def attach_run(uri: str, run_id: str) -> Run:
    """Reopen an existing run by id in the store at `uri` (a model task, maybe on another machine,
    logging under the run its catalogue flow made)."""
    return Run(MlflowClient(tracking_uri=uri), run_id)


class StageFailed(Exception):
    """A model's migration stopped at `stage`; the message says why."""

    def __init__(self, model: str, stage: str, cause: BaseException | str, row: dict[str, Any] | None = None):
        self.model, self.stage, self.cause = model, stage, str(cause)
        self.row = row  # the model's summary row, once known
        super().__init__(f"{model}: failed at {stage}: {cause}")

    def __reduce__(self):  # survives pickling (a Dask worker sends it back), row included
        return (StageFailed, (self.model, self.stage, self.cause, self.row))


class ModelRecord:
    """A model's migration as MLflow sees it: stage timings, status and failed stage."""

    def __init__(self, run: Run, model: str):
        self.run, self.model = run, model
        self.durations: dict[str, float] = {}
        self.failed_stage: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; on error, tag the run and raise StageFailed naming the stage."""
        start = time.perf_counter()
        try:
            yield
        except StageFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - every stage error fails the model at this stage
            self.failed_stage = name
            raise StageFailed(self.model, name, exc) from exc
        finally:
            self.durations[name] = time.perf_counter() - start

    def finish(self, ok: bool, error: str | None = None, tags: dict[str, Any] | None = None) -> None:
        """Log the stage durations, status tags and the error; end the run."""
        tags = {"status": "passed" if ok else "failed", "failed_stage": self.failed_stage or "", **(tags or {})}
        if error:
            tags["error"] = error[:5000]
        self.run.metrics({f"duration.{name}": seconds for name, seconds in self.durations.items()})
        self.run.tags(tags)
        self.run.end(ok)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists stay whole (logged as JSON)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= PARAM_MAX else text[: PARAM_MAX - 3] + "..."
