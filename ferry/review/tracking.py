"""MLflow records: one parent run per catalogue run, one nested run per model.

Uses `MlflowClient` with explicit run ids (no fluent active-run stack), so model runs can be
logged from any thread. Default store: `mlflow.db` (SQLite) at the project root;
`MLFLOW_TRACKING_URI` in the environment overrides it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

import ferry
from ferry.files import process_alive, project_root
from ferry.review.journal import OFFLINE_PREFIX, Journal, offline_id, unreachable

PARAM_MAX = 6000  # MLflow's limit on one param value


def tracking_uri(catalogue: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite file at the catalogue's project root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return absolute_uri(uri)
    return f"sqlite:///{project_root(catalogue) / 'mlflow.db'}"


_READY: set[str] = set()


def client_for(uri: str) -> MlflowClient:
    """A client of the store at `uri`. A new SQLite store is created under a file lock: MLflow creates its
    tables when the first client opens it, and two ferry runs doing that at once make one fail ("table ...
    already exists", or a half-applied migration)."""
    if not uri.startswith("sqlite:///") or uri in _READY:
        return MlflowClient(tracking_uri=uri)
    lock = Path(uri.removeprefix("sqlite:///")).with_suffix(".db-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)  # creates or upgrades the tables
            _READY.add(uri)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return client


def absolute_uri(uri: str) -> str:
    """A SQLite URI with a relative path (`sqlite:///alt.db`) made absolute against the working folder,
    as the user meant it; other URIs as given."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_absolute():
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _artifact_root(uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (not in the working directory)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


class Run:
    """One MLflow run, logged through explicit ids. If the store cannot be reached, the run's records
    go to `journal` instead (see ferry.review.journal) and the run carries on offline."""

    def __init__(self, client: MlflowClient, run_id: str, journal: Journal):
        self.client, self.run_id, self.journal = client, run_id, journal

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    @property
    def offline(self) -> bool:
        return self.run_id.startswith(OFFLINE_PREFIX) or self.journal.exists()

    def params(self, values: dict[str, Any]) -> None:
        self._write("log_batch", params={k: _param_value(v) for k, v in flatten(values).items()})

    def metrics(self, values: dict[str, float], step: int = 0) -> None:
        self.metric_steps({step: values})

    def metric_steps(self, steps: dict[int, dict[str, float]]) -> None:
        """Metrics of several steps (e.g. one per shard) in one call."""
        now = int(time.time() * 1000)
        self._write("log_batch", metrics=[[k, float(v), now, step] for step, values in steps.items()
                                          for k, v in values.items() if v is not None])

    def tags(self, values: dict[str, Any]) -> None:
        self._write("log_batch", tags={k: str(v) for k, v in values.items()})

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self._write("artifact", path=str(path), folder=folder)

    def text(self, text: str, name: str) -> None:
        self._write("text", text=text, name=name)

    def table(self, columns: dict[str, list], name: str) -> None:
        self._write("table", columns=columns, name=name)

    def datasets(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs: dicts of an MLflow Dataset's fields plus `tags`."""
        self._write("inputs", datasets=datasets)

    def register(self, name: str, savedmodel: str, inputs: dict[str, dict], outputs: list[str], shard: str,
                 tags: dict[str, str], data: dict[str, Any] | None = None) -> None:
        """Log the SavedModel as an MLflow model of this run, register it as `name`, alias `migrated`; its input
        example is the first rows of `shard`, in the data format `data` ({format, options}; default npz)."""
        self._write("register", name=name, savedmodel=savedmodel, inputs=inputs, outputs=outputs, shard=shard,
                    tags=tags, data=data)

    def end(self, ok: bool) -> None:
        self._write("end", status="FINISHED" if ok else "FAILED")

    def _write(self, op: str, **payload: Any) -> None:
        if not self.offline:
            try:
                apply_op(self.client, {"op": op, "run": self.run_id, **payload}, {})
                return
            except Exception as exc:
                if not unreachable(exc):
                    raise
                went_offline(self.journal, self.tracking_uri, exc)
                self.journal.record("note", run=self.run_id, reason=_first_line(exc))
        self.journal.record(op, run=self.run_id, **payload)


def went_offline(journal: Journal, uri: str, exc: BaseException) -> None:
    """Say once, loudly, where the records go now and how to log them later."""
    if not journal.exists():
        logging.getLogger("ferry").warning(
            "MLflow tracking at %s failed (%s): this run's records are kept in %s; log them later with "
            "`ferry relog %s`", uri, _first_line(exc), journal.folder, journal.id)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:1000]


def apply_op(client: MlflowClient, op: dict[str, Any], ids: dict[str, str]) -> str | None:
    """Carry out one record against a store (directly, or replaying a journal: `ids` maps offline ids)."""
    kind, run_id = op["op"], ids.get(op.get("run", ""), op.get("run", ""))
    if kind == "create_run":
        experiment = client.get_experiment_by_name(op["experiment"])
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            op["experiment"], _artifact_root(client.tracking_uri))
        tags = dict(op["tags"])
        if MLFLOW_PARENT_RUN_ID in tags:
            tags[MLFLOW_PARENT_RUN_ID] = ids.get(tags[MLFLOW_PARENT_RUN_ID], tags[MLFLOW_PARENT_RUN_ID])
        return client.create_run(experiment_id, run_name=op["run_name"], tags=tags).info.run_id
    if kind == "log_batch":
        params = [Param(k, v) for k, v in op.get("params", {}).items()]
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in op.get("metrics", [])]
        tags = [RunTag(k, v) for k, v in op.get("tags", {}).items()]
        for i in range(0, max(len(params), len(metrics), len(tags)), 100):
            client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=tags[i:i + 100])
    elif kind == "artifact":
        if Path(op["path"]).is_dir():
            client.log_artifacts(run_id, op["path"], op["folder"])
        else:
            client.log_artifact(run_id, op["path"], op["folder"])
    elif kind == "text":
        client.log_text(run_id, op["text"], op["name"])
    elif kind == "table":
        client.log_table(run_id, data=op["columns"], artifact_file=op["name"])
    elif kind == "inputs":
        client.log_inputs(run_id, datasets=[DatasetInput(Dataset(**{k: d[k] for k in _DATASET_FIELDS}),
                                                         tags=[InputTag(k, v) for k, v in d["tags"].items()])
                                            for d in op["datasets"]])
    elif kind == "register":
        from ferry.review.registry import example_from_shard, register_migrated

        version = register_migrated(client, run_id, op["name"], Path(op["savedmodel"]), op["inputs"], op["outputs"],
                                    example_from_shard(Path(op["shard"]), list(op["inputs"]), data=op.get("data")),
                                    op["tags"])
        client.set_tag(run_id, "registry.version", f"{op['name']}/{version.version}")
    elif kind == "end":
        client.set_terminated(run_id, op["status"])
    elif kind == "note" and run_id:
        client.set_tag(run_id, "ferry.tracking_failed", op["reason"])
    return None


_DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def _create_run(client: MlflowClient, journal: Journal, experiment: str, run_name: str,
                tags: dict[str, str]) -> Run:
    """A new run in `experiment`: in the store if it answers, else an offline run in the journal."""
    op = {"op": "create_run", "experiment": experiment, "run_name": run_name, "tags": tags}
    reason = "the tracking store could not be reached earlier in this catalogue run"
    if not journal.exists() and not tags.get(MLFLOW_PARENT_RUN_ID, "").startswith(OFFLINE_PREFIX):
        try:
            return Run(client, apply_op(client, op, {}), journal)
        except Exception as exc:
            if not unreachable(exc):
                raise
            went_offline(journal, client.tracking_uri, exc)
            reason = _first_line(exc)
    run_id = offline_id()
    journal.record("create_run", run=run_id, **{k: v for k, v in op.items() if k != "op"})
    journal.record("note", run=run_id, reason=reason)
    return Run(client, run_id, journal)


def owner_tags() -> dict[str, str]:
    """Which process holds a run open: a later run closes the runs whose process is gone."""
    return {"ferry.host": socket.gethostname(), "ferry.pid": str(os.getpid())}


def start_catalogue_run(catalogue: Path, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Run:
    """Create the experiment if needed and open the catalogue's parent run (offline if unreachable)."""
    client = client_for(tracking_uri(catalogue))
    key = datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    journal = Journal(project_root(catalogue) / ".ferry" / "relog" / key)
    return _create_run(client, journal, experiment, run_name, {"ferry.version": ferry.__version__,
                                                               "ferry.catalogue": str(catalogue),
                                                               "ferry.review.journal": journal.id, **owner_tags(),
                                                               **(tags or {})})


def start_model_run(parent: Run, model: str, experiment: str) -> Run:
    """Open a model's run nested under the catalogue run."""
    return _create_run(parent.client, parent.journal, experiment, model, {
        MLFLOW_PARENT_RUN_ID: parent.run_id, MLFLOW_RUN_NAME: model, "ferry.version": ferry.__version__,
        "env.TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
        **{f"tf.grappler.{k}": "on" if v else "off" for k, v in ferry.GRAPPLER_OPTIONS.items()}, **owner_tags()})


def close_abandoned_runs(catalogue: Path, experiment: str) -> list[str]:
    """End the runs of this catalogue's experiment that a killed ferry process left RUNNING (its host is
    this one and its process is gone): status KILLED, a tag saying why, and their Prefect flow run marked
    Crashed. Returns one line per run closed; an unreachable store closes nothing."""
    host = socket.gethostname()
    try:
        client = client_for(tracking_uri(catalogue))
        found = client.get_experiment_by_name(experiment)
        runs = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'", max_results=1000) \
            if found else []
    except Exception as exc:
        if unreachable(exc):
            return []
        raise
    notes = []
    for run in runs:
        tags = run.data.tags
        pid = tags.get("ferry.pid", "")
        if tags.get("ferry.host") != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        reason = (f"process {pid} on {host} ended without closing this run (killed?); closed as KILLED by a later "
                  f"run on {datetime.now():%Y-%m-%d %H:%M:%S}")
        client.set_tag(run.info.run_id, "ferry.abandoned", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        notes.append(f"MLflow run {run.info.run_name!r} ({run.info.run_id}) was left RUNNING by {reason}")
        if tags.get("prefect.flow_run_id"):
            from ferry.prefect_api import crash_flow_run

            if crash_flow_run(tags["prefect.flow_run_id"], reason):
                notes.append(f"Prefect flow run {tags['prefect.flow_run_id']} marked Crashed")
    return notes


def attach_run(uri: str, run_id: str, journal: str) -> Run:
    """Reopen an existing run by id in the store at `uri` (a model task, maybe on another machine,
    logging under the run its catalogue flow made), with the catalogue run's journal folder."""
    return Run(client_for(uri), run_id, Journal(Path(journal)))


def relog(journal: Path, uri: str) -> dict[str, str]:
    """Replay a journal into the store at `uri`; offline run id -> new run id."""
    journal = Journal(journal)
    if not journal.exists():
        raise FileNotFoundError(f"no journal at {journal.folder} (ops.jsonl missing)")
    if (journal.folder / "replayed.json").exists():
        raise FileExistsError(f"{journal.folder} was relogged already (replayed.json); nothing to do")
    client = client_for(uri)
    return journal.replay(lambda op, ids: apply_op(client, op, ids))


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
        self.finished = False

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; on error, tag the run and raise StageFailed naming the stage."""
        start = time.perf_counter()
        try:
            yield
        except StageFailed:
            raise
        except Exception as exc:
            self.failed_stage = name
            raise StageFailed(self.model, name, exc) from exc
        finally:
            self.durations[name] = time.perf_counter() - start

    def finish(self, ok: bool, error: str | None = None, tags: dict[str, Any] | None = None) -> None:
        """Log the stage durations, status tags and the error; end the run (once)."""
        if self.finished:
            return
        self.finished = True
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
