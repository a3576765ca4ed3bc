"""Running the Keras side: the devices shards are spread over, the spec's model with the restored weights
(once per process and weights file), its outputs by serving name."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferry.cache import fingerprint
from ferry.keras3.build import model_from_info
from ferry.shards import batches
from ferry.spec import ModelSpec


def devices() -> list[str]:
    """Logical GPUs if any, else logical CPUs: where verification shards are spread."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def device_for(index: int) -> str:
    """The device shard `index` runs on (round-robin)."""
    available = devices()
    return available[index % len(available)]


_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def load_keras(spec: ModelSpec, model_info: dict[str, Any], weights: str):
    """The spec's Keras model with the restored weights loaded: built once per process and weights file
    content, then shared (every shard of a model runs the same model; treat it as read-only)."""
    key = hashlib.sha256(json.dumps([spec.model_dump(mode="json"), model_info, str(weights),
                                     fingerprint(Path(weights))], sort_keys=True, default=str).encode()).hexdigest()
    with _LOCK:
        if key not in _MODELS:
            model = model_from_info(spec, model_info)
            model.load_weights(weights)
            _MODELS[key] = model
        return _MODELS[key]


def run_keras(spec: ModelSpec, model, arrays: dict[str, np.ndarray], batch_size: int,
              device: str) -> dict[str, np.ndarray]:
    """Outputs of the Keras model in inference mode, named as the spec's outputs (in order)."""
    names = list(spec.source.outputs)
    parts: list[list[np.ndarray]] = []
    with tf.device(device):
        for batch in batches(arrays, batch_size):
            args = [tf.constant(batch[k]) for k in spec.source.inputs]
            out = model(args[0] if len(args) == 1 else args, training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            if len(out) != len(names):
                raise ValueError(f"{spec.spec_file}: source.outputs: the model has {len(out)} outputs, "
                                 f"the spec names {len(names)}: {names}")
            parts.append([np.asarray(o) for o in out])
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}
