"""The reference: the original TF1 artifact in its own `Session`, restored by its own means, what the Keras
model must reproduce. One per model process and device (memoised), shared by every shard run there."""

from __future__ import annotations

import re
import threading

import numpy as np
import tensorflow as tf

from ferry.cache import fingerprint
from ferry.data import SERIALIZED, shard_label, where
from ferry.shards import ShardError, batches
from ferry.sources import FORMATS
from ferry.spec import ModelSpec
from ferry.tf1.formats import READERS
from ferry.tf1.load import IMPORTS


class ReferenceUnavailable(RuntimeError):
    """The TF1 graph has an op TensorFlow has no kernel for on this device (NCHW convolutions on CPU)."""


_NODE = re.compile(r"\{\{node ([^}]+)\}\}")


def unsupported_layout(graph: tf.Graph, exc: tf.errors.OpError) -> str | None:
    """What to tell the user when `exc` is TensorFlow refusing a channels-first (NCHW) op on this device: the
    node, its op type, and how to verify it; None for any other error."""
    names = [exc.op.name] if getattr(exc, "op", None) is not None else []
    names += _NODE.findall(exc.message)
    for name in names:
        try:
            op = graph.get_operation_by_name(name)
        except KeyError:
            continue
        try:
            layout = op.get_attr("data_format").decode()
        except ValueError:
            continue
        if layout.startswith("NC"):
            lines = [line.strip() for line in exc.message.splitlines()]
            reason = next((line for line in lines if "NHWC" in line or "NCHW" in line), lines[0])
            return (f"node {op.name} ({op.type}, data_format {layout}) has no kernel for {layout} there "
                    f"({reason[:200]}). Verify on a GPU machine (`verify` places shards on the GPUs "
                    "it finds), or re-export the TF1 graph NHWC (data_format='NHWC' / 'channels_last').")
    return None


class Reference:
    """The spec's original artifact, loaded (pinned to `device`) and restored once by its own means (its
    Saver, the SavedModel loader); `run` feeds it batches. Any tensor may be fed: an Estimator's model is
    cut at its `IteratorGetNext`. A batch of serialized tf.Examples (`{SERIALIZED: ...}`, `verify.tfrecord.
    serialized`) is fed at the graph's string tensor, and its parse ops make the Keras model's inputs."""

    def __init__(self, spec: ModelSpec, device: str):
        self.spec, self.device = spec, device
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        IMPORTS[str(spec.source.artifact.resolve())] += 1
        try:
            with self.graph.as_default(), tf.device(device):
                READERS[spec.source.format].load(self.session, spec.source)
        except tf.errors.OpError as exc:
            raise ValueError(f"{spec.spec_file}: source: {spec.source.artifact} does not load with its weights: "
                             f"{exc.message.splitlines()[0]}") from None
        self.feeds = {name: self.graph.get_tensor_by_name(t) for name, t in spec.source.inputs.items()}
        self.fetches = {name: self.graph.get_tensor_by_name(t) for name, t in spec.source.outputs.items()}
        serialized = spec.verify.serialized
        self.serialized = self.graph.get_tensor_by_name(serialized) if serialized else None

    def feed(self, batch: dict[str, np.ndarray]) -> dict[tf.Tensor, np.ndarray]:
        """The feed dict of a batch: serving inputs at their tensors, serialized tf.Examples at the string tensor."""
        if SERIALIZED in batch:
            return {self.serialized: batch[SERIALIZED]}
        return {self.feeds[k]: v for k, v in batch.items()}

    def run(self, arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """The graph's outputs on `arrays`, batch by batch, keyed by serving name."""
        parts = [self.run_batch(batch) for batch in batches(arrays, batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.spec.source.outputs}

    def run_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's outputs on one batch."""
        return self._run(self.fetches, batch)

    def inputs_and_outputs(self, batch: dict[str, np.ndarray],
                           where: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The Keras model's inputs and the graph's outputs on one batch: the batch itself, or, for serialized
        tf.Examples, what the graph's own parse ops make of them, fetched in the same run as its outputs.
        `where` (spec file, field, the batch's records) begins the ShardError when the graph's parsing refuses
        a record."""
        if SERIALIZED not in batch:
            return batch, self.run_batch(batch)
        try:
            both = self._run({"inputs": self.feeds, "outputs": self.fetches}, batch)
        except tf.errors.InvalidArgumentError as exc:
            reason = " ".join(exc.message.split())[:400]
            raise ShardError(f"{where}: the graph's own parsing (fed at {self.serialized.name}) refuses a record: "
                             f"{reason}") from None
        return both["inputs"], both["outputs"]

    def _run(self, fetches: dict, batch: dict[str, np.ndarray]) -> dict:
        try:
            return self.session.run(fetches, self.feed(batch))
        except tf.errors.OpError as exc:
            layout = unsupported_layout(self.graph, exc)
            if layout is None:
                raise
            raise ReferenceUnavailable(f"{self.spec.spec_file}: the TF1 reference cannot run on {self.device}: "
                                       f"{layout}") from exc

    def run_tensors(self, batch: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray | str]:
        """Any tensors of the graph on one batch, by name; a tensor that cannot be fetched (on a branch not
        taken, inside a loop) gets the first line of TensorFlow's reason instead."""
        feed = self.feed(batch)
        try:
            return dict(zip(names, self.session.run(names, feed)))
        except tf.errors.OpError:
            pass
        values: dict[str, np.ndarray | str] = {}
        for name in names:
            try:
                values[name] = self.session.run(name, feed)
            except tf.errors.OpError as exc:
                values[name] = f"TF1 tensor {name} cannot be fetched: {exc.message.splitlines()[0]}"
        return values


_REFERENCES: dict[tuple, Reference] = {}
_LOCK = threading.Lock()


def reference(spec: ModelSpec, device: str) -> Reference:
    """The spec's reference on `device`, made once per process (and graph, checkpoint and device)."""
    source = spec.source
    files = [*FORMATS[source.format].graph_files(source), *FORMATS[source.format].weight_files(source)]
    key = (source.format, str(source.artifact), tuple(fingerprint(f) for f in files), str(source.checkpoint_prefix),
           source.tag, tuple(source.inputs.items()), tuple(source.outputs.items()), spec.verify.serialized, device)
    with _LOCK:
        if key not in _REFERENCES:
            _REFERENCES[key] = Reference(spec, device)
        return _REFERENCES[key]


def keras_inputs(spec: ModelSpec, batch: dict[str, np.ndarray], shard: str, device: str) -> dict[str, np.ndarray]:
    """A batch of a shard as the Keras model takes it: the batch itself, or the graph's own parse of its
    serialized tf.Examples."""
    if SERIALIZED not in batch:
        return batch
    return reference(spec, device).inputs_and_outputs(batch, f"{where(spec)}: {shard_label(shard)}")[0]


def run_tf1(spec: ModelSpec, arrays: dict[str, np.ndarray], batch_size: int, device: str) -> dict[str, np.ndarray]:
    """Outputs of the original graph on `arrays` (its reference on `device`)."""
    return reference(spec, device).run(arrays, batch_size)
