"""Running the Keras side: the devices shards are spread over, the spec's model with the restored weights
(once per process and weights file), its outputs by serving name, and its intermediate outputs."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import ferry
from ferry.cache import fingerprint
from ferry.keras3.build import NODE_OUTPUTS, model_from_info
from ferry.shards import batches
from ferry.spec import ModelSpec

# Grappler options pinned for every `tf.function` of this process (verify's forward, the reloaded SavedModel):
# its arithmetic optimizer regroups adds (docs/design.md). Process-wide; a TF1 Session created without a
# config takes them too (`context.config`).
tf.config.optimizer.set_experimental_options(ferry.GRAPPLER_OPTIONS)


def devices() -> list[str]:
    """Logical GPUs if any, else logical CPUs: where verification shards are spread."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def device_for(index: int) -> str:
    """The device shard `index` runs on (round-robin)."""
    available = devices()
    return available[index % len(available)]


_BUILT: dict[str, Any] = {}  # models as built (initial weights), by spec and model info
_MODELS: dict[str, Any] = {}  # models with restored weights, by spec, model info and weights file
_LOCK = threading.Lock()


def _key(spec: ModelSpec, model_info: dict[str, Any], *more: Any) -> str:
    built_from = {k: model_info.get(k) for k in ("inputs", "graph_values", "auto")}  # not what reconstruct adds
    return hashlib.sha256(json.dumps([spec.model_dump(mode="json"), built_from, *more], sort_keys=True,
                                     default=str).encode()).hexdigest()


def built_model(spec: ModelSpec, model_info: dict[str, Any]):
    """The spec's model as built, once per process: reconstruct builds it, restore takes it."""
    with _LOCK:
        key = _key(spec, model_info)
        if key not in _BUILT:
            _BUILT[key] = model_from_info(spec, model_info)
        return _BUILT[key]


def take_built_model(spec: ModelSpec, model_info: dict[str, Any]):
    """The model reconstruct built in this process (or a new one), no longer shared: restore assigns to it."""
    model = built_model(spec, model_info)
    with _LOCK:
        _BUILT.pop(_key(spec, model_info), None)
    return model


def keep_restored(spec: ModelSpec, model_info: dict[str, Any], weights: str, model) -> None:
    """Share `model` as the one holding the weights file `weights` (just written from it): verify and export
    take it instead of building the model again."""
    with _LOCK:
        _MODELS[_key(spec, model_info, str(weights), fingerprint(Path(weights)))] = model


def load_keras(spec: ModelSpec, model_info: dict[str, Any], weights: str):
    """The spec's model with the restored weights loaded: the one restore assigned in this process, else built
    and loaded once per process and weights file content, then shared (every shard of a model runs the
    same model; treat it as read-only)."""
    key = _key(spec, model_info, str(weights), fingerprint(Path(weights)))
    with _LOCK:
        if key not in _MODELS:
            model = model_from_info(spec, model_info)
            model.load_weights(weights)
            _MODELS[key] = model
        return _MODELS[key]


_FORWARDS: dict[int, Any] = {}


def forward(model, signature: dict[str, dict[str, Any]]):
    """The model's inference pass compiled once (`tf.function` over the serving inputs, any batch size),
    shared by every shard of the process."""
    with _LOCK:
        if id(model) not in _FORWARDS:
            specs = [tf.TensorSpec([None, *sig["shape"]], sig["dtype"]) for sig in signature.values()]
            _FORWARDS[id(model)] = tf.function(lambda *args: model(args[0] if len(args) == 1 else list(args),
                                                                   training=False), input_signature=specs)
        return _FORWARDS[id(model)]


def run_batch(spec: ModelSpec, model, batch: dict[str, np.ndarray], signature: dict[str, dict[str, Any]] | None,
              device: str) -> dict[str, np.ndarray]:
    """One batch through the Keras model in inference mode (compiled when `signature` is given), its outputs
    named as the spec's outputs (in order)."""
    names = list(spec.source.outputs)
    with tf.device(device):
        args = [tf.constant(batch[k]) for k in spec.source.inputs]
        if signature is not None:
            out = forward(model, signature)(*args)
        else:
            out = model(args[0] if len(args) == 1 else args, training=False)
    out = out if isinstance(out, (list, tuple)) else [out]
    if len(out) != len(names):
        raise ValueError(f"{spec.spec_file}: source.outputs: the model has {len(out)} outputs, "
                         f"the spec names {len(names)}: {names}")
    return {name: np.asarray(o) for name, o in zip(names, out)}


def run_keras(spec: ModelSpec, model, arrays: dict[str, np.ndarray], batch_size: int,
              device: str) -> dict[str, np.ndarray]:
    """Outputs of the Keras model in inference mode over whole arrays (eagerly: a model just reloaded)."""
    parts = [run_batch(spec, model, batch, None, device) for batch in batches(arrays, batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in spec.source.outputs}


@dataclass(frozen=True)
class Node:
    """A layer or graph node whose output can be read: its symbolic output and inputs ((producer, tensor)), and
    its layer (None for a `keras.ops` node)."""

    name: str
    output: Any
    inputs: tuple[tuple[str, Any], ...]
    layer: keras.layers.Layer | None


def readable_nodes(spec: ModelSpec, model) -> tuple[list[Node], dict[str, str]]:
    """The nodes of the model (`spec` as built: `ferry.keras3.build.resolved`) in topological order, and the
    layers whose output cannot be read (name -> why): a nested model (a Sequential or subclassed model
    inside a factory's model), a layer called more than once, a layer with several outputs."""
    arch = spec.architecture
    values = NODE_OUTPUTS.get(model)
    if arch.graph and values is not None:  # every node by its spec name, `keras.ops` calls included
        nodes = [Node(n.name, values[n.name], tuple((i, values[i]) for i in n.inputs),
                      model.get_layer(n.name) if n.class_name else None) for n in arch.graph.nodes]
        return nodes, {}
    names = {id(t): name for t, name in zip(model.inputs, spec.source.inputs)}
    calls = _calls(model.outputs)
    uses: dict[str, int] = {}
    for call in calls:
        uses[call.operation.name] = uses.get(call.operation.name, 0) + 1
    nodes, unreadable = [], {}
    for call in calls:
        layer = call.operation
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.InputLayer):
            continue  # a `keras.ops` call of a factory: no weights, nothing to match
        if isinstance(layer, keras.Model):
            unreadable[layer.name] = ("a nested model (Sequential or subclassed): the outputs of its layers are not "
                                      "in the model's graph")
        elif uses[layer.name] > 1:
            unreadable[layer.name] = "called more than once: its output is not one tensor of the model's graph"
        elif len(call.output_tensors) != 1:
            unreadable[layer.name] = "several outputs"
        else:
            given = list({id(t): t for t in call.input_tensors}.values())
            nodes.append(Node(layer.name, call.output_tensors[0],
                              tuple((names.get(id(t)) or t._keras_history.operation.name, t) for t in given), layer))
    return nodes, unreadable


def _calls(outputs: list[Any]) -> list[Any]:
    """The calls (Keras graph nodes) computing `outputs`, in topological order: walked through Keras' own record
    of a functional graph (each symbolic tensor's `_keras_history` names the call that made it), as
    `keras.Model(inputs, outputs)` walks it."""
    order, seen = [], set()
    stack = [(t._keras_history.operation._inbound_nodes[t._keras_history.node_index], False) for t in outputs]
    while stack:
        call, done = stack.pop()
        if done:
            order.append(call)
            continue
        if id(call) in seen:
            continue
        seen.add(id(call))
        stack.append((call, True))
        stack.extend((parent, False) for parent in reversed(call.parent_nodes) if id(parent) not in seen)
    return order


def node_values(spec: ModelSpec, model, tensors: list[Any], batch: dict[str, np.ndarray],
                device: str) -> list[np.ndarray]:
    """The values of symbolic `tensors` of the model on one batch (inference mode), through a model over the
    same graph and weights."""
    probe = keras.Model(list(model.inputs), tensors)
    with tf.device(device):
        out = probe([tf.constant(batch[k]) for k in spec.source.inputs], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
