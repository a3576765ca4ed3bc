"""The stages as Prefect tasks.

Each stage task runs its plain stage function (`tasks/<stage>.py`, listed in `ferry.stages.STAGES`) in
the model's own process, is cached under a key made of what its result depends on — spec sections, the
files it reads (fingerprints), its inputs (earlier stages' results), ferry's build (`ferry.cache`) — and
persists its small JSON result in the model's work folder (`WorkDir.results`). A rerun executes only the
stages whose key changed or that did not complete; the others end in Prefect's `Cached` state. Large
objects (models, tensors) never travel through Prefect: stages hand each other paths and small records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from ferry.cache import fingerprint, stage_key
from ferry.data import shard_file
from ferry.isolation import ModelProcess
from ferry.sources import FORMATS
from ferry.spec import ModelSpec, StageTimeouts
from ferry.stages import STAGES, WorkDir


def factory_files(spec: ModelSpec) -> list[Path]:
    """The source file of a `factory` architecture's module, if it lives in the catalogue's folder."""
    if spec.architecture == "auto" or spec.architecture.factory is None or spec.catalogue_dir is None:
        return []
    base = spec.catalogue_dir / spec.architecture.factory.module.replace(".", "/")
    return [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()]


# The files behind each kind a stage declares it reads (`Stage.reads`), from the spec and its inputs.
READS = {
    "graph": lambda spec, inputs: FORMATS[spec.source.format].graph_files(spec.source),
    "weights": lambda spec, inputs: FORMATS[spec.source.format].weight_files(spec.source),
    "factory": lambda spec, inputs: factory_files(spec),
    "shard": lambda spec, inputs: [shard_file(inputs["shard"])],  # a file, or the file of a record range
}


@dataclass
class ModelRun:
    """One model's migration in progress: its spec, work folder, process, and what each stage did."""

    spec: ModelSpec
    work: WorkDir
    process: ModelProcess
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    force: frozenset[str] = frozenset()
    states: dict[str, str] = field(default_factory=dict)  # task label -> Prefect state name
    task_runs: dict[str, str] = field(default_factory=dict)  # task label -> Prefect task run id

    def run(self, stage: str, label: str | None = None, **inputs: Any) -> dict[str, Any]:
        """Run (or take from the cache) one stage with its inputs; raise its error."""
        label = label or stage
        task_ = stage_task.with_options(task_run_name=f"{self.spec.name}/{label}",
                                        result_storage=self.work.results, refresh_cache=stage in self.force)
        state = task_(stage, label, self, inputs, return_state=True)
        if state.name == "Cached" and not files_intact(state.result(), self.work.fingerprints):  # deleted since
            state = task_.with_options(refresh_cache=True)(stage, label, self, inputs, return_state=True)
        self.states[label] = state.name
        self.task_runs[label] = str(state.state_details.task_run_id)
        return state.result()

    def key(self, stage: str, label: str, inputs: dict[str, Any]) -> str:
        """The cache key: spec sections, the files read, the inputs (earlier results), ferry's build."""
        spec = self.spec.model_dump(mode="json")
        sections = {s: spec[s] for s in STAGES[stage].sections}
        if "verify" in sections:  # verification caches per shard: the glob itself is not an input
            sections["verify"] = {k: v for k, v in sections["verify"].items() if k != "shards"}
        files = [path for kind in STAGES[stage].reads for path in READS[kind](self.spec, inputs)]
        return stage_key(self.spec.name, label, sections, files, [inputs], memo_dir=self.work.fingerprints)


def files_intact(result: Any, memo_dir: Path | None = None) -> bool:
    """Whether the files a result names (`files: {path: fingerprint}`) are still there, unchanged."""
    files = result.get("files", {}) if isinstance(result, dict) else {}
    return all(fingerprint(Path(path), memo_dir) == digest for path, digest in files.items())


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return parameters["model"].key(parameters["stage"], parameters["label"], parameters["inputs"])


REPORTED = "_ferry_reported"  # set on a stage's error: its message is the news, Prefect's traceback is not


@task(name="stage", cache_key_fn=_cache_key, persist_result=True, result_serializer="json")
def stage_task(stage: str, label: str, model: ModelRun, inputs: dict[str, Any]) -> dict[str, Any]:
    """Run one stage function in the model's process, within the stage's timeout. Its error is raised (a
    failed stage is never cached) and marked, so the log shows its message without a traceback: the
    stage ran in another process, and the traceback here would only show the way back."""
    logger = get_run_logger()
    try:
        return model.process.call(STAGES[stage].function, model.spec, inputs=inputs, stage=stage,
                                  timeout=getattr(model.timeouts, stage), log=logger.log)
    except Exception as exc:
        setattr(exc, REPORTED, True)
        raise
