"""`ferry.RawOp`: a TF1 op that `auto` has no translation for, run as `tf.raw_ops.<op>` on its attributes.

`architecture: auto` emits it rather than give up on a model (the fallback, `ferry.tf1.auto.fallback`). It
calls TensorFlow directly, so a model using it runs, saves and reloads (`.keras`) with the TensorFlow backend
only: it is not portable to JAX or PyTorch (`layers.portability` says so, and the export's marker). Each input
of the TF1 op is, in the op's order, a tensor the layer is called with, a constant kept in its config, or a
variable held as a weight of this layer (named after the op's argument: `x`, `values_1`)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework import op_def_registry


@keras.saving.register_keras_serializable(package="ferry")
class RawOp(keras.layers.Layer):
    """`tf.raw_ops.<op_type>(**operands, **attrs)`; called with the op's tensor inputs, positionally.

    `operands`: one entry per input of the TF1 op, in order: `{"arg": name}` (the next tensor the layer is
    called with), `{"arg", "constant", "dtype"}` or `{"arg", "weight", "shape", "dtype"}` (a weight of this
    layer). `attrs`: the op's attributes that `tf.raw_ops` takes (types by name, shapes as lists).
    `outputs`: how many tensors the op returns (more than one: the layer returns them all, as a list).
    `anchored`: the op reads no tensor; the one input only places the layer in the graph."""

    def __init__(self, op_type: str, operands: list[dict[str, Any]], attrs: dict[str, Any] | None = None,
                 outputs: int = 1, anchored: bool = False, **kwargs):
        kwargs.setdefault("autocast", False)  # a TF1 op takes its inputs' own dtypes (float64 too)
        super().__init__(**kwargs)
        self.op_type, self.inputs_spec, self.attrs = op_type, [dict(e) for e in operands], dict(attrs or {})
        self.outputs_count, self.anchored = outputs, anchored
        self.op_def = op_def_registry.get(op_type)
        if self.op_def is None or not hasattr(tf.raw_ops, op_type):
            raise ValueError(f"ferry.RawOp: {op_type!r} is not an op of tf.raw_ops in TensorFlow {tf.__version__}")
        self.held = {}
        for entry in self.inputs_spec:
            if "weight" in entry:
                dtype = entry["dtype"]
                self.held[entry["weight"]] = self.add_weight(
                    shape=tuple(entry["shape"]), name=entry["weight"], dtype=dtype, initializer="zeros",
                    trainable=tf.as_dtype(dtype).is_floating)
        self.built = True  # the weights' shapes come from the TF1 graph, not from the inputs

    def call(self, *args):
        tensors = iter(() if self.anchored else args)
        lists = {a.name for a in self.op_def.input_arg if a.number_attr or a.type_list_attr}
        values: dict[str, Any] = {name: [] for name in lists}
        for entry in self.inputs_spec:
            if "weight" in entry:
                value = tf.convert_to_tensor(self.held[entry["weight"]].value)
            elif "constant" in entry:
                value = tf.constant(entry["constant"], dtype=entry["dtype"])
            else:
                value = next(tensors)
            if entry["arg"] in lists:
                values[entry["arg"]].append(value)
            else:
                values[entry["arg"]] = value
        kinds = {a.name: a.type for a in self.op_def.attr}
        attrs = {k: _attr_value(v, kinds.get(k, "")) for k, v in self.attrs.items()}
        result = getattr(tf.raw_ops, self.op_type)(**values, **attrs)
        if self.outputs_count == 1:
            return tf.nest.flatten(result)[0] if isinstance(result, (list, tuple)) else result
        return list(tf.nest.flatten(result))

    def get_config(self):
        return {**super().get_config(), "op_type": self.op_type, "operands": self.inputs_spec, "attrs": self.attrs,
                "outputs": self.outputs_count, "anchored": self.anchored}


def _attr_value(value: Any, kind: str) -> Any:
    """An attribute as written in the config (JSON) back as `tf.raw_ops` takes it."""
    if kind == "type":
        return tf.as_dtype(value)
    if kind == "list(type)":
        return [tf.as_dtype(v) for v in value]
    if kind == "shape":
        return tf.TensorShape(value)
    if kind == "list(shape)":
        return [tf.TensorShape(v) for v in value]
    return value
