"""The reference: the original TF1 graph restored by its own `Saver` in its own `Session`, what the Keras
model must reproduce. One per model process and device (memoised), shared by every shard run there."""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf

from ferry.cache import fingerprint
from ferry.shards import batches
from ferry.spec import ModelSpec
from ferry.tf1.load import IMPORTS, read_meta_graph_def


class Reference:
    """The spec's TF1 graph, imported (pinned to `device`) and restored once; `run` feeds it batches."""

    def __init__(self, spec: ModelSpec, device: str):
        self.spec = spec
        self.graph = tf.Graph()
        IMPORTS[str(spec.source.meta.resolve())] += 1
        with self.graph.as_default(), tf.device(device):
            saver = tf.compat.v1.train.import_meta_graph(read_meta_graph_def(spec.source.meta), clear_devices=True)
            self.feeds = {name: self.graph.get_tensor_by_name(t) for name, t in spec.source.inputs.items()}
            self.fetches = {name: self.graph.get_tensor_by_name(t) for name, t in spec.source.outputs.items()}
        self.session = tf.compat.v1.Session(graph=self.graph)
        if saver is not None:
            try:
                with self.graph.as_default():  # else the Saver takes itself for an eager one
                    saver.restore(self.session, str(spec.source.checkpoint_prefix))
            except tf.errors.OpError as exc:
                raise ValueError(f"{spec.spec_file}: source.checkpoint: the graph's own Saver cannot restore "
                                 f"{spec.source.checkpoint_prefix}: {exc.message.splitlines()[0]}") from None

    def run(self, arrays: dict[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
        """The graph's outputs on `arrays`, batch by batch, keyed by serving name."""
        parts = [self.session.run(self.fetches, {self.feeds[k]: v for k, v in batch.items()})
                 for batch in batches(arrays, batch_size)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.spec.source.outputs}


_REFERENCES: dict[tuple, Reference] = {}
_LOCK = threading.Lock()


def reference(spec: ModelSpec, device: str) -> Reference:
    """The spec's reference on `device`, made once per process (and graph, checkpoint and device)."""
    key = (str(spec.source.meta), fingerprint(spec.source.meta), str(spec.source.checkpoint_prefix),
           tuple(spec.source.inputs.items()), tuple(spec.source.outputs.items()), device)
    with _LOCK:
        if key not in _REFERENCES:
            _REFERENCES[key] = Reference(spec, device)
        return _REFERENCES[key]


def run_tf1(spec: ModelSpec, arrays: dict[str, np.ndarray], batch_size: int, device: str) -> dict[str, np.ndarray]:
    """Outputs of the original graph on `arrays` (its reference on `device`)."""
    return reference(spec, device).run(arrays, batch_size)
