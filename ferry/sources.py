"""The formats a TF1 fleet holds, as the spec sees them (no TensorFlow): which files each reads, and what
can be checked about them before anything runs. Reading them is `ferry.tf1.formats`, keyed by the same
names.

    source: {meta: model.ckpt.meta, checkpoint: model.ckpt}          # a MetaGraph + name-based checkpoint
    source: {frozen_graph: frozen.pb, inputs: {...}, outputs: {...}}  # weights are constants
    source: {saved_model: export/1577/, tag: serve, signature: serving_default}
    source: {estimator_dir: model_dir/, checkpoint: latest}           # or model.ckpt-12000

A format is one decorated class here (files, checks) and one in `ferry.tf1.formats` (reading).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ferry.spec import Source

FORMATS: dict[str, SourceFormat] = {}


def source_format(name: str):
    """Register a format under the `source` key that names it in a spec."""
    def register(cls: type[SourceFormat]) -> type[SourceFormat]:
        FORMATS[name] = cls(name)
        return cls
    return register


@dataclass(frozen=True)
class SourceFormat:
    """One format: the files that define its graph and its weights, and the problems with them."""

    name: str
    needs_signature: ClassVar[bool] = True  # source.inputs/outputs required (a SavedModel has its own)

    def graph_files(self, source: Source) -> list[Path]:
        """The files the graph is read from (fingerprinted in cache keys)."""
        return [source.artifact]

    def weight_files(self, source: Source) -> list[Path]:
        """The files the weights are read from."""
        return checkpoint_files(source.checkpoint_prefix) if source.checkpoint_prefix else []

    def problems(self, source: Source) -> list[tuple[str, str, str]]:
        """(field, message, value) for each problem visible without reading the artifact."""
        if not source.artifact.exists():
            return [(f"source.{self.name}", "not found", str(source.artifact))]
        return []

    def checkpoint_problem(self, source: Source) -> list[tuple[str, str, str]]:
        prefix = source.checkpoint_prefix
        if prefix is not None and not Path(f"{prefix}.index").is_file():
            return [("source.checkpoint", f"no checkpoint index {Path(prefix).name}.index beside this prefix",
                     str(prefix))]
        return []


def checkpoint_files(prefix: Path) -> list[Path]:
    """The files of a name-based checkpoint: `<prefix>.index` and its `<prefix>.data-*` shards."""
    prefix = Path(prefix)
    return sorted(prefix.parent.glob(f"{prefix.name}.index")) + sorted(prefix.parent.glob(f"{prefix.name}.data-*"))


@source_format("meta")
class MetaGraph(SourceFormat):
    """A `.meta` MetaGraphDef (`Saver.save` writes one) and a name-based checkpoint."""

    def problems(self, source: Source) -> list[tuple[str, str, str]]:
        found = [] if source.meta.is_file() else [("source.meta", "file not found", str(source.meta))]
        return found + self.checkpoint_problem(source)


@source_format("frozen_graph")
class FrozenGraph(SourceFormat):
    """A frozen GraphDef (`.pb`): the weights are `Const` nodes, there is no checkpoint."""

    def weight_files(self, source: Source) -> list[Path]:
        return [source.frozen_graph]

    def problems(self, source: Source) -> list[tuple[str, str, str]]:
        path = source.frozen_graph
        if not path.is_file():
            return [("source.frozen_graph", "file not found" if not path.exists() else "not a file", str(path))]
        return []


@source_format("saved_model")
class SavedModel(SourceFormat):
    """A TF1 SavedModel folder: `saved_model.pb` (MetaGraphs by tag, SignatureDefs) and `variables/`. The
    signature's keys are the serving names unless `inputs`/`outputs` say otherwise."""

    needs_signature: ClassVar[bool] = False

    def graph_files(self, source: Source) -> list[Path]:
        return [p for p in (source.saved_model / "saved_model.pb", source.saved_model / "saved_model.pbtxt")
                if p.exists()]

    def problems(self, source: Source) -> list[tuple[str, str, str]]:
        folder = source.saved_model
        if not folder.is_dir():
            return [("source.saved_model", "folder not found" if not folder.exists() else "not a folder",
                     str(folder))]
        if not self.graph_files(source):
            return [("source.saved_model", f"no saved_model.pb in the folder (it holds {_listing(folder)})",
                     str(folder))]
        return []


@source_format("estimator_dir")
class EstimatorDir(SourceFormat):
    """An Estimator `model_dir`: `graph.pbtxt`, the `checkpoint` state file and `model.ckpt-N.*`
    checkpoints; `checkpoint: latest` (the default) follows the state file, `model.ckpt-N` picks one."""

    def graph_files(self, source: Source) -> list[Path]:
        return [source.estimator_dir / "graph.pbtxt"]

    def problems(self, source: Source) -> list[tuple[str, str, str]]:
        folder = source.estimator_dir
        if not folder.is_dir():
            return [("source.estimator_dir", "folder not found" if not folder.exists() else "not a folder",
                     str(folder))]
        found = []
        if not (folder / "graph.pbtxt").is_file():
            found.append(("source.estimator_dir", f"no graph.pbtxt in the model_dir (it holds {_listing(folder)})",
                          str(folder)))
        try:
            latest_checkpoint(folder, source.checkpoint)
        except ValueError as exc:
            return [*found, ("source.checkpoint", str(exc), str(source.checkpoint or "latest"))]
        return found + self.checkpoint_problem(source)


def latest_checkpoint(model_dir: Path, wanted: str | None) -> Path:
    """The checkpoint prefix of an Estimator `model_dir`: `wanted` (`model.ckpt-N`), or for `latest`/None
    the one the `checkpoint` state file names; ValueError listing the checkpoints present otherwise."""
    present = sorted({p.name.removesuffix(".index") for p in model_dir.glob("*.index")},
                     key=lambda n: (len(n), n))
    if wanted and wanted != "latest":
        if (model_dir / f"{wanted}.index").is_file():
            return model_dir / wanted
        raise ValueError(f"no checkpoint {wanted!r} in {model_dir} (it holds {present or 'none'})")
    state = model_dir / "checkpoint"
    if not state.is_file():
        raise ValueError(f"no `checkpoint` state file in {model_dir} to say which is the latest checkpoint "
                         f"(checkpoints present: {present or 'none'}); name one: checkpoint: model.ckpt-N")
    found = re.search(r'^model_checkpoint_path:\s*"(.*)"', state.read_text(), flags=re.M)
    if not found:
        raise ValueError(f"{state} names no model_checkpoint_path")
    path = Path(found.group(1))
    return path if path.is_absolute() else model_dir / path


def detect(path: Path) -> str | None:
    """The format of a path as `ferry inspect`/`scan` meet it: a `.meta`, a frozen `.pb`, a SavedModel
    folder, an Estimator model_dir; None for anything else."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "saved_model"
        if (path / "graph.pbtxt").is_file() and any(path.glob("*.index")):
            return "estimator_dir"
        return None
    if path.suffix == ".meta":
        return "meta"
    if path.suffix in (".pb", ".pbtxt") and path.name not in ("saved_model.pb", "saved_model.pbtxt"):
        return "frozen_graph"
    return None


def _listing(folder: Path, limit: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "") or "nothing"
