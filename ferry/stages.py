"""The stage contracts: the stages in order, what each reads and returns, and the work folder that
names every file they hand each other. No TensorFlow, no Prefect: the flow, the tasks, the review and
the tests all read the stages from here.

    inspect ──► reconstruct ──► restore ──► verify (one per shard) ──► export

A stage is a plain function `tasks.<module>:<function>(spec, **inputs)` run in the model's own
process; it returns one of the records below (JSON-able dicts, persisted by Prefect as the stage's
cached result), whose `files` name the files it wrote with their fingerprints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

from ferry.files import project_root

Files = dict[str, str]  # path -> sha256 of what a stage wrote


class InputSignature(TypedDict):
    shape: list[int | None]  # without the batch axis
    dtype: str


class Inspected(TypedDict):
    """inspect: the graph's inventory (`WorkDir.inventory`) and the serving signature (the spec's, or a
    SavedModel's own: `ModelSpec.with_signature` gives later stages the spec with it)."""

    inventory: str
    inputs: dict[str, str]  # serving name -> tensor
    outputs: dict[str, str]
    files: Files


class Reconstructed(TypedDict):
    """reconstruct: how to build the Keras model again (the inputs, values read from the graph, and for
    `auto` the derived architecture and rules) and what it holds."""

    inputs: dict[str, InputSignature]
    graph_values: dict[str, dict]
    # {"architecture": ..., "rules": [...], "tensors": {node: the TF1 tensor it computes},
    #  "fallback_ops": {op type run as a `ferry.RawOp`: one node}}
    auto: NotRequired[dict]
    weights: dict[str, dict]  # weight path -> {"shape", "dtype"}
    params: int


class Restored(TypedDict):
    """restore: the restored weights file and the mapping report, with its coverage."""

    weights: str
    mapping: str
    coverage: dict[str, float]
    files: Files


class ShardParity(TypedDict):
    """verify, one shard: per output the parity metrics (`ferry.parity.compare`)."""

    shard: str
    index: int
    device: str
    rows: int
    passed: bool
    outputs: dict[str, dict]
    first_divergence: NotRequired[dict]  # a failing shard: `ferry.divergence.FirstDivergence`
    files: NotRequired[Files]  # both sides' outputs, for the review plots


class Exported(TypedDict):
    """export: the export folder (SavedModel, `<name>.keras`, marker) and its re-checks."""

    path: str
    checked_on: str
    outputs: dict[str, dict]
    keras: dict
    files: Files


@dataclass(frozen=True)
class Stage:
    """One stage: its function, the spec sections and the inputs (files named below) its result depends on."""

    name: str
    function: str  # `module:function`, called as function(spec, **inputs) in the model's process
    sections: tuple[str, ...]
    reads: tuple[str, ...]  # kinds of files read: graph, weights, factory, shard (see tasks/stages.py)
    timeout: float  # default seconds (run.timeouts.<stage>; verify: per shard)


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("inspect", "tasks.inspect:inspect_graph", ("source",), ("graph",), 600),
    Stage("reconstruct", "tasks.reconstruct:reconstruct", ("source", "architecture"), ("graph", "factory"), 1800),
    Stage("restore", "tasks.restore:restore_weights", ("source", "architecture", "name_map"),
          ("graph", "weights", "factory"), 3600),
    Stage("verify", "tasks.verify:verify_shard", ("source", "architecture", "verify"),
          ("graph", "weights", "factory", "shard"), 3600),
    Stage("export", "tasks.export:export_savedmodel", ("source", "architecture", "verify", "export"),
          ("graph", "weights", "factory", "shard"), 3600),
)}
STAGE_NAMES = tuple(STAGES)  # in order


def forced_stages(force: bool, stage: str | None) -> frozenset[str]:
    """The stages `--force [--stage NAME]` recomputes: all, or NAME and the stages after it."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"--stage: no stage {stage!r}; stages: {', '.join(STAGES)}")
    if not force and stage is None:
        return frozenset()
    return frozenset(STAGE_NAMES[STAGE_NAMES.index(stage) if stage else 0:])


@dataclass(frozen=True)
class WorkDir:
    """One model's work folder, `.ferry/work/<model>/`: the one place that names the files its stages write
    and hand each other, and the lock that keeps it to one run at a time."""

    path: Path

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def of(cls, catalogue: Path, model: str) -> WorkDir:
        """The work folder of `model` in the project holding `catalogue`."""
        return cls(project_root(catalogue) / ".ferry" / "work" / model)

    def __str__(self) -> str:  # cache keys and messages show the folder
        return str(self.path)

    @property
    def inventory(self) -> Path:
        return self.path / "inventory.json"

    @property
    def mapping(self) -> Path:
        return self.path / "mapping.json"

    @property
    def weights(self) -> Path:
        return self.path / "restored.weights.h5"

    @property
    def parity(self) -> Path:
        return self.path / "parity.json"

    @property
    def outputs(self) -> Path:
        """Both sides' outputs of each shard, for the plots."""
        return self.path / "outputs"

    def shard_outputs(self, index: int) -> Path:
        return self.outputs / f"shard-{index}.npz"

    def shard_index(self, outputs_file: Path) -> int:
        return int(outputs_file.stem.removeprefix("shard-"))

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def results(self) -> Path:
        """The stages' cached results (Prefect's result storage)."""
        return self.path / "results"

    @property
    def savedmodel_run(self) -> Path:
        """The id of the MLflow run that logged the current export's files."""
        return self.path / "savedmodel.run_id"

    @property
    def fingerprints(self) -> Path:
        """Where file digests are remembered, shared by every model of the project."""
        return self.path.parent.parent / "fingerprints"

    @contextlib.contextmanager
    def lock(self, say: Callable[[str], None]) -> Iterator[None]:
        """Hold the folder for one run at a time (two runs of one catalogue at once wait for each other model
        by model instead of writing the same files). The lock dies with its process; once held, temporary
        files a killed run left here are removed."""
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                say(f"{self.path.name}: waiting for another run of this model ({handle.read().strip() or 'unknown'})")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
            handle.flush()
            for leftover in self.path.glob(".*.tmp*"):  # a killed run's half-written files
                (shutil.rmtree if leftover.is_dir() else os.remove)(leftover)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
