"""Shape ops, translated into `keras.ops` calls (and `Concatenate`): reshape, squeeze, expand_dims,
transpose, concat, unit-stride strided slices."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, handles, layer_name

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


@handles("Reshape")
def reshape(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """The static shape (batch left free) when TF knows it, else the constant shape operand."""
    x = tr.node(op.inputs[0])
    static = tensor.shape.as_list() if tensor.shape.rank is not None else None
    if static and all(d is not None for d in static[1:]):
        return tr.add(layer_name(op.name), [x], op="reshape", newshape=[-1, *static[1:]])
    return tr.add(layer_name(op.name), [x], op="reshape", newshape=tr.const(op.inputs[1], "shape"))


@handles("Squeeze")
def squeeze(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`squeeze` of the op's axes (all unit axes when it names none)."""
    axis = op.get_attr("squeeze_dims")
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="squeeze", axis=list(axis) or None)


@handles("ExpandDims")
def expand_dims(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`expand_dims` at the constant axis."""
    x = tr.node(op.inputs[0])
    return tr.add(layer_name(op.name), [x], op="expand_dims", axis=int(tr.const(op.inputs[1], "axis")))


@handles("Transpose")
def transpose(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`transpose` by the constant permutation (a dynamic_rnn's output is a fusion: `fusions.py`)."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="transpose", axes=tr.const(op.inputs[1], "perm"))


@handles("ConcatV2")
def concat(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`Concatenate` along the constant axis."""
    axis = int(tr.const(op.inputs[-1], "axis"))
    return tr.add(layer_name(op.name), [tr.node(i) for i in op.inputs[:-1]], **{"class": "Concatenate"}, axis=axis)


@handles("StridedSlice")
def strided_slice(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Unit-stride slices (masks for begin/end/shrink) -> `keras.ops.slice` (+ `squeeze`)."""
    name = layer_name(op.name)
    if op.get_attr("ellipsis_mask") or op.get_attr("new_axis_mask"):
        raise Unsupported("StridedSlice(ellipsis/new axis)", op.name)
    begin, end, strides = (tr.const(op.inputs[i], "bounds") for i in (1, 2, 3))
    shape = op.inputs[0].shape.as_list()
    if any(s != 1 for s in strides) or len(begin) != len(shape):
        raise Unsupported("StridedSlice(strides)", op.name)
    bmask, emask, shrink = (op.get_attr(a) for a in ("begin_mask", "end_mask", "shrink_axis_mask"))
    start, size, squeeze = [], [], []
    for axis, (b, e) in enumerate(zip(begin, end)):
        dim = shape[axis]
        if shrink >> axis & 1:
            b = b + dim if b < 0 and dim is not None else b
            start.append(b), size.append(1), squeeze.append(axis)
            continue
        b = 0 if bmask >> axis & 1 else b
        if emask >> axis & 1:
            start.append(b), size.append(-1)
            continue
        if dim is None or b < 0 or e < 0:
            raise Unsupported("StridedSlice(dynamic bounds)", op.name)
        start.append(b), size.append(e - b)
    sliced = tr.add(f"{name}.slice", [tr.node(op.inputs[0])], op="slice", start_indices=start, shape=size)
    return tr.add(name, [sliced], op="squeeze", axis=squeeze) if squeeze else sliced
