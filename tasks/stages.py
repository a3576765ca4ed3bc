"""The stages as Prefect tasks.

Each stage task runs its plain stage function (`tasks/<stage>.py`) in the model's own process, is
cached under a key made of what its result depends on — spec sections, input-file fingerprints,
upstream results, ferry's build (`ferry.cache`) — and persists its small JSON result under the model's
work folder (`.ferry/work/<model>/results/`). A rerun executes only the stages whose key changed or
that did not complete; the others end in Prefect's `Cached` state. Large objects (models, tensors)
never travel through Prefect: stages hand each other paths and small records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from ferry.cache import checkpoint_files, fingerprint, stage_key
from ferry.isolation import ModelProcess
from ferry.spec import STAGES, ModelSpec, StageTimeouts


@dataclass(frozen=True)
class Stage:
    function: str  # `module:function`, run in the model's process with (spec, *args)
    sections: tuple[str, ...]  # the spec sections its result depends on


STAGE = {
    "inspect": Stage("tasks.inspect:inspect_graph", ("source",)),
    "reconstruct": Stage("tasks.reconstruct:reconstruct", ("source", "architecture")),
    "restore": Stage("tasks.restore:restore_weights", ("source", "architecture", "name_map")),
    "verify": Stage("tasks.verify:verify_shard", ("source", "architecture", "verify")),
    "export": Stage("tasks.export:export_savedmodel", ("source", "architecture", "verify", "export")),
}


def forced_stages(force: bool, stage: str | None) -> frozenset[str]:
    """The stages `--force [--stage NAME]` recomputes: all, or NAME and the stages after it."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"--stage: no stage {stage!r}; stages: {', '.join(STAGES)}")
    if not force and stage is None:
        return frozenset()
    return frozenset(STAGES[STAGES.index(stage) if stage else 0:])


@dataclass
class ModelRun:
    """One model's migration in progress: its spec, work folder, process, and what each stage did."""

    spec: ModelSpec
    work: Path
    process: ModelProcess
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    force: frozenset[str] = frozenset()
    states: dict[str, str] = field(default_factory=dict)  # task label -> Prefect state name
    task_runs: dict[str, str] = field(default_factory=dict)  # task label -> Prefect task run id

    def run(self, stage: str, *args: Any, upstream: tuple = (), label: str | None = None) -> dict[str, Any]:
        """Run (or take from the cache) one stage; raise its error."""
        label = label or stage
        task_ = stage_task.with_options(task_run_name=f"{self.spec.name}/{label}",
                                        result_storage=self.work / "results", refresh_cache=stage in self.force)
        state = task_(stage, label, self, list(args), list(upstream), return_state=True)
        if state.name == "Cached" and not files_intact(state.result(), self.memo_dir):  # e.g. a deleted SavedModel
            state = task_.with_options(refresh_cache=True)(stage, label, self, list(args), list(upstream),
                                                           return_state=True)
        self.states[label] = state.name
        self.task_runs[label] = str(state.state_details.task_run_id)
        return state.result()

    def key(self, stage: str, label: str, args: list[Any], upstream: list[Any]) -> str:
        """The cache key: spec sections, input files, arguments and upstream results, ferry's build."""
        spec = self.spec.model_dump(mode="json")
        sections = {s: spec[s] for s in STAGE[stage].sections}
        if "verify" in sections:  # verification caches per shard: the glob itself is not an input
            sections["verify"] = {k: v for k, v in sections["verify"].items() if k != "shards"}
        return stage_key(self.spec.name, label, sections, self.input_files(stage, args), [args, upstream],
                         memo_dir=self.memo_dir)

    @property
    def memo_dir(self) -> Path:
        """Where file digests are remembered (`.ferry/fingerprints/`)."""
        return self.work.parent.parent / "fingerprints"

    def input_files(self, stage: str, args: list[Any]) -> list[Path]:
        """The files a stage reads: the graph, the checkpoint, factory code, its shard."""
        files = [self.spec.source.meta]
        if stage in ("restore", "verify"):
            files += checkpoint_files(self.spec.source.checkpoint_prefix)
        if stage != "inspect":
            files += factory_files(self.spec)
        if stage in ("verify", "export"):
            files.append(Path(args[2]))  # the shard
        return files


def factory_files(spec: ModelSpec) -> list[Path]:
    """The source file of a `factory` architecture's module, if it lives in the catalogue's folder."""
    if spec.architecture == "auto" or spec.architecture.factory is None or spec.catalogue_dir is None:
        return []
    base = spec.catalogue_dir / spec.architecture.factory.module.replace(".", "/")
    return [p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()]


def files_intact(result: Any, memo_dir: Path | None = None) -> bool:
    """Whether the files a result names (`files: {path: fingerprint}`) are still there, unchanged."""
    files = result.get("files", {}) if isinstance(result, dict) else {}
    return all(fingerprint(Path(path), memo_dir) == digest for path, digest in files.items())


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return parameters["model"].key(parameters["stage"], parameters["label"], parameters["args"],
                                   parameters["upstream"])


REPORTED = "_ferry_reported"  # set on a stage's error: its message is the news, Prefect's traceback is not


@task(name="stage", cache_key_fn=_cache_key, persist_result=True, result_serializer="json")
def stage_task(stage: str, label: str, model: ModelRun, args: list[Any], upstream: list[Any]) -> dict[str, Any]:
    """Run one stage function in the model's process, within the stage's timeout. Its error is raised (a
    failed stage is never cached) and marked, so the log shows its message without a traceback: the
    stage ran in another process, and the traceback here would only show the way back."""
    logger = get_run_logger()
    try:
        return model.process.call(STAGE[stage].function, model.spec, *args, stage=stage,
                                  timeout=getattr(model.timeouts, stage), log=logger.log)
    except Exception as exc:
        setattr(exc, REPORTED, True)
        raise
