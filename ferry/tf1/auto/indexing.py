"""Ops that make, select or pick values, translated into `keras.ops` calls: fill (to a shape computed with
`tf.shape`), range, one-hot, where (`Select`), gather_nd, top-k, band parts.

`Where` with one argument (the indices of the true elements) is not translated: its output's length depends
on the data, which no portable Keras graph computes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.auto.values import (
    Dim,
    broadcast,
    chain,
    constant,
    constant_node,
    dim_value,
    dims_value,
    has_node,
    operand,
    part,
    scalar,
    zeros_along,
)

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


@handles("Fill")
def fill(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """The scalar value reshaped to the rank of the dims, then `tile`d by the static dims and broadcast along the
    run-time ones (`tf.ones([batch, n, 1])`)."""
    name = layer_name(op.name)
    dims = dims_value(tr, op.inputs[0])
    value = tr.add(part(tr, name, "value"), [operand(tr, op.inputs[1])], op="reshape", newshape=[1] * len(dims))
    return broadcast(tr, name, value, dims, tensor.dtype.base_dtype.name)


@handles("Range")
def range_(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Static bounds (constants, static dims): a constant node; `tf.range(n)` of a run-time dim n: the cumulative
    sum of n ones, minus one."""
    if tr.static(tensor) is not None:
        return constant(tr, tensor)
    name = layer_name(op.name)
    start, limit, delta = (dim_value(tr, t) for t in op.inputs)
    if not any(isinstance(d, Dim) for d in (start, limit, delta)):
        value = np.arange(start, limit, delta, dtype=tensor.dtype.as_numpy_dtype)
        return constant_node(tr, name, value, tensor.dtype.base_dtype.name, op.name)
    if start != 0 or delta != 1 or not isinstance(limit, Dim):
        raise Unsupported("Range(run-time bounds other than tf.range(n))", op.name)
    zeros = zeros_along(tr, name, limit, 1, 0, tensor.dtype.base_dtype.name)
    ones = tr.add(part(tr, name, "ones"), [zeros], op="add", args=[1])
    counts = tr.add(part(tr, name, "counts"), [ones], op="cumsum", axis=0)
    return tr.add(name, [counts], op="subtract", args=[1])


@handles("OneHot")
def one_hot(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`one_hot` at the op's axis (an index out of range: all off); on/off values other than 1/0 through `where`."""
    name = layer_name(op.name)
    depth = int(tr.const(op.inputs[1], "depth"))
    on, off = tr.const(op.inputs[2], "on_value"), tr.const(op.inputs[3], "off_value")
    dtype, axis = op.get_attr("T").name, op.get_attr("axis")
    indices = tr.node(op.inputs[0])
    if (on, off) == (1, 0):
        return tr.add(name, [indices], op="one_hot", num_classes=depth, axis=axis, dtype=dtype)
    hot = tr.add(part(tr, name, "hot"), [indices], op="one_hot", num_classes=depth, axis=axis, dtype="int32")
    picked = tr.add(part(tr, name, "where"), [hot], op="where", x1=on, x2=off)
    return tr.add(name, [picked], op="cast", dtype=dtype)


@handles("Select", "SelectV2")
def select(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`where`, a constant scalar branch as its argument; `Select` with a vector condition picks rows (the
    condition reshaped to broadcast)."""
    name = layer_name(op.name)
    condition, then, other = op.inputs
    cond = operand(tr, condition)
    rank = then.shape.rank
    if op.type == "Select" and condition.shape.rank == 1 and rank and rank > 1:
        cond = tr.add(part(tr, name, "rows"), [cond], op="reshape", newshape=[-1] + [1] * (rank - 1))
    first, second = scalar(tr, then), scalar(tr, other)
    if first is None and second is None:
        return tr.add(name, [cond, operand(tr, then), operand(tr, other)], op="where")
    if first is None:
        return tr.add(name, [cond, operand(tr, then)], op="where", x2=second)
    if second is None:
        flipped = tr.add(part(tr, name, "not"), [cond], op="logical_not")
        return tr.add(name, [flipped, operand(tr, other)], op="where", x2=first)
    return tr.add(name, [cond], op="where", x1=first, x2=second)


@handles("GatherNd", reads_variables=True)
def gather_nd(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`take` from the params with their first K axes flattened (K: the indices' last dim), at the linear index
    `sum(indices[..., j] * stride_j)`: a constant list for constant indices. The flattened axes after the
    first need static sizes, and all but one of the others."""
    name = layer_name(op.name)
    params, indices = op.inputs
    shape, depth = params.shape.as_list(), indices.shape.as_list()[-1]
    if depth is None or not 0 < depth <= len(shape) or None in shape[1:depth]:
        raise Unsupported("GatherNd(run-time sizes)", op.name)
    strides = [int(np.prod(shape[j + 1:depth], dtype=np.int64)) for j in range(depth)]
    source = operand(tr, params)
    if depth > 1:
        flat = [None if None in shape[:depth] else strides[0] * shape[0], *shape[depth:]]
        if flat.count(None) > 1:
            raise Unsupported("GatherNd(run-time sizes)", op.name)
        source = tr.add(part(tr, name, "flat"), [source], op="reshape", newshape=[-1 if d is None else d for d in flat])
    static = tr.static(indices)
    if static is not None:
        linear = (np.asarray(static, np.int64) @ np.asarray(strides, np.int64)).tolist()
        return tr.add(name, [source], op="take", indices=linear, axis=0)
    index = tr.node(indices)
    terms = []
    for j, stride in enumerate(strides):
        term = tr.add(part(tr, name, f"index{j}"), [index], op="take", indices=j, axis=-1)
        if stride != 1:
            term = tr.add(part(tr, name, f"offset{j}"), [term], op="multiply", args=[stride])
        terms.append(term)
    linear = terms[0]
    for j, term in enumerate(terms[1:], 1):
        linear = tr.add(part(tr, name, f"linear{j}"), [linear, term], op="add")
    return tr.add(name, [source, linear], op="take", axis=0)


@handles("TopKV2")
def top_k(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Indices (output 1, `<op>.indices`): the first k of a stable `argsort` of the negated input (TF's order for
    ties: the lower index first); values: `take_along_axis` of those (`keras.ops.top_k` returns a pair, which a
    graph node cannot)."""
    if not op.get_attr("sorted"):
        raise Unsupported("TopKV2(sorted=False)", op.name)
    name = layer_name(op.name)
    x, rank = operand(tr, op.inputs[0]), op.inputs[0].shape.rank
    k = int(tr.const(op.inputs[1], "k"))
    indices = part(tr, name, "indices")
    if not has_node(tr, indices):
        steps = [{"op": "negative"}, {"op": "argsort", "axis": -1},
                 {"op": "slice", "start_indices": [0] * rank, "shape": [-1] * (rank - 1) + [k]},
                 {"op": "cast", "dtype": op.outputs[1].dtype.name}]
        chain(tr, indices, x, steps)
    if tensor.value_index == 1:
        return indices
    return tr.add(name, [x, indices], op="take_along_axis", axis=-1)


@handles("MatrixBandPart")
def band_part(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`triu` then `tril`, keeping `num_lower` diagonals below and `num_upper` above (negative: all of them)."""
    lower, upper = int(tr.const(op.inputs[1], "num_lower")), int(tr.const(op.inputs[2], "num_upper"))
    steps = ([{"op": "triu", "k": -lower}] if lower >= 0 else []) + ([{"op": "tril", "k": upper}] if upper >= 0 else [])
    return chain(tr, layer_name(op.name), operand(tr, op.inputs[0]), steps)
