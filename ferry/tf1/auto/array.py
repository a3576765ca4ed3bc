"""Shape ops, translated into `keras.ops` calls (and `Concatenate`): reshape (also by a shape computed with
`tf.shape`), squeeze, expand_dims, transpose, concat, stack/unstack, split, slices (numpy-style strided
slices with every mask), tile. A variable read by one of them becomes a `ferry.Weight` node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.auto.values import Dim, broadcast, chain, dims_value, operand, output_name, part

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


@handles("Reshape", reads_variables=True)
def reshape(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """The static shape TF infers (the batch left free, or its one unknown dim -1), else the shape operand
    evaluated (`tf.shape` arithmetic): its one run-time dim -1, or, beside a -1, a run-time dim of the input
    itself (`tf.reshape(x, [tf.shape(x)[0], -1])`), whose -1 then follows from the input's static dims."""
    x = operand(tr, op.inputs[0])
    static = tensor.shape.as_list() if tensor.shape.rank is not None else None
    if static and all(d is not None for d in static[1:]):
        shape = [-1, *static[1:]]
    elif static and static.count(None) == 1:
        shape = [-1 if d is None else d for d in static]
    else:
        shape = _run_time_shape(tr, op)
    return tr.add(layer_name(op.name), [x], op="reshape", newshape=shape)


def _run_time_shape(tr: Translator, op: tf.Operation) -> list[int]:
    """A `Reshape`'s shape operand as a static shape with one -1."""
    target = dims_value(tr, op.inputs[1])
    dims = [d for d in target if isinstance(d, Dim)]
    if len(dims) + target.count(-1) <= 1:
        return [-1 if isinstance(d, Dim) else d for d in target]
    if len(dims) == 1 and target.count(-1) == 1 and dims[0].tensor.name == tr.resolve(op.inputs[0]).name:
        shape, axis = op.inputs[0].shape.as_list(), dims[0].axis
        rest = shape[:axis] + shape[axis + 1:]  # the input's other dims: the -1 and the static dims hold them
        known = int(np.prod([d for d in target if isinstance(d, int) and d != -1], dtype=np.int64))
        if None not in rest and known and int(np.prod(rest, dtype=np.int64)) % known == 0:
            inferred = int(np.prod(rest, dtype=np.int64)) // known
            return [-1 if isinstance(d, Dim) else inferred if d == -1 else d for d in target]
    raise Unsupported("Reshape(several run-time dims)", op.name)


@handles("Squeeze")
def squeeze(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`squeeze` of the op's axes (all unit axes when it names none)."""
    axis = op.get_attr("squeeze_dims")
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="squeeze", axis=list(axis) or None)


@handles("ExpandDims", reads_variables=True)
def expand_dims(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`expand_dims` at the constant axis (a scalar or a one-element list, as BERT writes it)."""
    axis = np.reshape(tr.const(op.inputs[1], "axis"), -1)
    if axis.size != 1:
        raise Unsupported("ExpandDims(several axes)", op.name)
    return tr.add(layer_name(op.name), [operand(tr, op.inputs[0])], op="expand_dims", axis=int(axis[0]))


@handles("Transpose", reads_variables=True)
def transpose(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`transpose` by the constant permutation (a dynamic_rnn's output is a fusion: `fusions.py`)."""
    return tr.add(layer_name(op.name), [operand(tr, op.inputs[0])], op="transpose", axes=tr.const(op.inputs[1], "perm"))


@handles("ConcatV2")
def concat(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`Concatenate` along the constant axis."""
    axis = int(tr.const(op.inputs[-1], "axis"))
    return tr.add(layer_name(op.name), [operand(tr, i) for i in op.inputs[:-1]], **{"class": "Concatenate"}, axis=axis)


@handles("Pack")
def pack(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`Concatenate` of the inputs, each expanded at the op's axis (`keras.ops.stack` takes one list argument,
    which a graph node cannot give it)."""
    name, axis = layer_name(op.name), op.get_attr("axis")
    if len(op.inputs) == 1:
        return tr.add(name, [operand(tr, op.inputs[0])], op="expand_dims", axis=axis)
    parts = [tr.add(part(tr, name, str(i)), [operand(tr, t)], op="expand_dims", axis=axis)
             for i, t in enumerate(op.inputs)]
    dtype = op.outputs[0].dtype
    typed = {} if dtype.is_floating else {"dtype": dtype.name}  # a layer casts to float32 by default (a shape)
    return tr.add(name, parts, **{"class": "Concatenate"}, axis=axis, **typed)


@handles("Unpack")
def unpack(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Output k: `take` of index k along the op's axis."""
    return tr.add(output_name(tr, op, tensor), [tr.node(op.inputs[0])], op="take", indices=tensor.value_index,
                  axis=op.get_attr("axis"))


@handles("Split", "SplitV")
def split(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Output k: the `slice` of its part along the constant axis (equal parts, or the op's sizes: one -1 allowed,
    which may stand last along a run-time dim)."""
    x, axis = (op.inputs[1], op.inputs[0]) if op.type == "Split" else (op.inputs[0], op.inputs[2])
    rank = x.shape.rank
    axis = int(tr.const(axis, "axis")) % rank
    dim = x.shape.as_list()[axis]
    if op.type == "Split":
        count = op.get_attr("num_split")
        sizes = [dim // count] * count if dim is not None else None
    else:
        sizes = list(tr.const(op.inputs[1], "size_splits"))
        if -1 in sizes and dim is not None:
            sizes[sizes.index(-1)] = dim - sum(sizes) - 1
    k = tensor.value_index
    if sizes is None or -1 in sizes[:k] or sizes[k] == -1 and k != len(sizes) - 1:
        raise Unsupported(f"{op.type}(run-time length)", op.name)
    start, shape = [0] * rank, [-1] * rank
    start[axis], shape[axis] = sum(sizes[:k]), sizes[k]
    return tr.add(output_name(tr, op, tensor), [tr.node(x)], op="slice", start_indices=start, shape=shape)


@handles("Slice", reads_variables=True)
def slice_(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`keras.ops.slice` by the constant begin and size (-1: to the end)."""
    begin, size = tr.const(op.inputs[1], "begin"), tr.const(op.inputs[2], "size")
    return tr.add(layer_name(op.name), [operand(tr, op.inputs[0])], op="slice", start_indices=begin, shape=size)


@handles("StridedSlice", reads_variables=True)
def strided_slice(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """numpy-style slicing with any constant strides and every mask (begin, end, ellipsis, new axis, shrink), on
    any number of leading axes: one `slice` of the unit-stride ranges, a `take` per other stride, then `squeeze`
    of the indexed axes and `expand_dims` of the new ones."""
    x = op.inputs[0]
    if x.shape.rank is None:
        raise Unsupported("StridedSlice(unknown rank)", op.name)
    shape = x.shape.as_list()
    begin, end, strides = (tr.const(op.inputs[i], "bounds") for i in (1, 2, 3))
    bmask, emask, ellipsis, new_axis, shrink = (op.get_attr(f"{m}_mask") for m in (
        "begin", "end", "ellipsis", "new_axis", "shrink_axis"))
    # One entry per input axis: (begin, end, stride, begin masked, end masked, shrink); the new axes' output positions.
    axes: list[tuple[int, int, int, bool, bool, bool]] = []
    new_axes: list[int] = []
    full = (0, 0, 1, True, True, False)
    for i, (b, e, s) in enumerate(zip(begin, end, strides)):
        if ellipsis >> i & 1:
            covered = len(shape) - sum(1 for j in range(len(begin)) if not (ellipsis >> j & 1 or new_axis >> j & 1))
            axes.extend([full] * covered)
        elif new_axis >> i & 1:
            new_axes.append(len(axes) - sum(a[5] for a in axes) + len(new_axes))
        else:
            axes.append((b, e, s, bool(bmask >> i & 1), bool(emask >> i & 1), bool(shrink >> i & 1)))
    axes.extend([full] * (len(shape) - len(axes)))
    start, size, steps = [], [], []
    for axis, (dim, entry) in enumerate(zip(shape, axes)):
        first, length, taken = _axis_slice(dim, *entry, op)
        start.append(first)
        size.append(length)
        if taken is not None:
            steps.append({"op": "take", "indices": taken, "axis": axis})
    if any(start) or any(s != -1 for s in size):
        steps.insert(0, {"op": "slice", "start_indices": start, "shape": size})
    squeezed = [axis for axis, entry in enumerate(axes) if entry[5]]
    if squeezed:
        steps.append({"op": "squeeze", "axis": squeezed})
    if new_axes:
        steps.append({"op": "expand_dims", "axis": new_axes})
    return chain(tr, layer_name(op.name), operand(tr, x), steps)


def _axis_slice(dim: int | None, b: int, e: int, s: int, from_start: bool, to_end: bool, index: bool,
                op: tf.Operation) -> tuple[int, int, list[int] | None]:
    """One axis of a strided slice: (start, size, None) for a unit-stride range (size -1: to the end), or
    (0, -1, indices) for another stride (a `take`); an index is a range of one."""
    if index:
        b = b + dim if b < 0 and dim is not None else b
        if b < 0:
            raise Unsupported("StridedSlice(negative index on a run-time dim)", op.name)
        return b, 1, None
    if dim is None:
        b = 0 if from_start else b
        if s != 1 or b < 0 or not to_end and e < b:
            raise Unsupported("StridedSlice(strided or negative bounds on a run-time dim)", op.name)
        return b, -1 if to_end else e - b, None
    picked = range(*slice(None if from_start else b, None if to_end else e, s).indices(dim))
    if s == 1:
        return (0, -1, None) if len(picked) == dim else (picked.start, len(picked), None)
    return 0, -1, list(picked)


@handles("Tile", reads_variables=True)
def tile(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`tile` by the constant multiples; a run-time multiple (`tf.tile(cls, [batch, 1, 1])`) of an axis of size 1
    broadcasts it by adding zeros of that length."""
    multiples = dims_value(tr, op.inputs[1])
    shape = op.inputs[0].shape.as_list()
    if any(isinstance(m, Dim) and d != 1 for m, d in zip(multiples, shape)):
        raise Unsupported("Tile(run-time multiple of an axis longer than 1)", op.name)
    return broadcast(tr, layer_name(op.name), operand(tr, op.inputs[0]), multiples, tensor.dtype.base_dtype.name)
