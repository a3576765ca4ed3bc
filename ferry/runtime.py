"""Running both sides on the same data: the TF1 graph in its own Session, the Keras model eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferry import shards
from ferry.model import model_from_info
from ferry.spec import ModelSpec


def devices() -> list[str]:
    """Logical GPUs if any, else logical CPUs: where verification shards are spread."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def device_for(index: int) -> str:
    """The device shard `index` runs on (round-robin)."""
    available = devices()
    return available[index % len(available)]


def load_shard(spec: ModelSpec, shard: Path) -> dict[str, np.ndarray]:
    """The shard's arrays for the spec's inputs; an error names the spec, the shard and what is wrong."""
    return shards.load_shard(Path(shard), list(spec.source.inputs), f"{spec.spec_file}: verify.shards")


def _batches(arrays: dict[str, np.ndarray], size: int):
    rows = len(next(iter(arrays.values())))
    for start in range(0, rows, size):
        yield {k: v[start : start + size] for k, v in arrays.items()}


def run_tf1(spec: ModelSpec, arrays: dict[str, np.ndarray], batch_size: int, device: str) -> dict[str, np.ndarray]:
    """Outputs of the original graph: imported into its own graph, restored by its own Saver."""
    graph = tf.Graph()
    with graph.as_default(), tf.device(device):
        saver = tf.compat.v1.train.import_meta_graph(str(spec.source.meta), clear_devices=True)
        feeds = {name: graph.get_tensor_by_name(t) for name, t in spec.source.inputs.items()}
        fetches = {name: graph.get_tensor_by_name(t) for name, t in spec.source.outputs.items()}
    with tf.compat.v1.Session(graph=graph) as sess:
        if saver is not None:
            try:
                saver.restore(sess, str(spec.source.checkpoint_prefix))
            except tf.errors.OpError as exc:
                raise ValueError(f"{spec.spec_file}: source.checkpoint: the graph's own Saver cannot restore "
                                 f"{spec.source.checkpoint_prefix}: {exc.message.splitlines()[0]}") from None
        parts = [sess.run(fetches, {feeds[k]: v for k, v in batch.items()}) for batch in _batches(arrays, batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in spec.source.outputs}


def load_keras(spec: ModelSpec, model_info: dict[str, Any], weights: str):
    """The spec's Keras model with the restored weights loaded."""
    model = model_from_info(spec, model_info)
    model.load_weights(weights)
    return model


def run_keras(spec: ModelSpec, model, arrays: dict[str, np.ndarray], batch_size: int,
              device: str) -> dict[str, np.ndarray]:
    """Outputs of the Keras model in inference mode, named as the spec's outputs (in order)."""
    names = list(spec.source.outputs)
    parts: list[list[np.ndarray]] = []
    with tf.device(device):
        for batch in _batches(arrays, batch_size):
            args = [tf.constant(batch[k]) for k in spec.source.inputs]
            out = model(args[0] if len(args) == 1 else args, training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            if len(out) != len(names):
                raise ValueError(f"{spec.spec_file}: source.outputs: the model has {len(out)} outputs, "
                                 f"the spec names {len(names)}: {names}")
            parts.append([np.asarray(o) for o in out])
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}
