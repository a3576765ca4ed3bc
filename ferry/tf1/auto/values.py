"""What handlers compute at translation time, and the nodes that stand for values no op computes.

- Shape arithmetic (`tf.shape(x)[0]`, `Pack`ed into a `Reshape`'s or a `Fill`'s shape) is evaluated here
  (`shape_value`): static dims become ints, the others a `Dim`, an axis of a tensor (the batch, mostly).
- A `Dim` becomes a node through `zeros_along`: zeros of that run-time length, computed from its tensor.
- A constant operand becomes a node (`constant`), computed from a spec input so it sits in the graph: a
  `Rescaling(scale=0, offset=value)` of zeros, since `keras.ops` take no array-valued arguments portably.
- A variable read outside a layer becomes a `ferry.Weight` node (`weight_node`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, layer_name

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


@dataclass(frozen=True)
class Dim:
    """A dim known only at run time: `axis` of `tensor`."""

    tensor: tf.Tensor
    axis: int


DimValue = int | Dim


def shape_value(tr: Translator, tensor: tf.Tensor) -> DimValue | list[DimValue]:
    """The value of an int scalar or vector computed from shapes: constants, `Shape`, and `Cast`, `Pack`,
    `ConcatV2`, `StridedSlice`, `Slice` of those, `Mul` of static ones. Unsupported for anything else."""
    value = tr.static(tensor)
    if value is not None:
        return np.asarray(value).tolist()
    tensor = tr.resolve(tensor)
    op = tensor.op
    if op.type == "Shape" and op.inputs[0].shape.rank is not None:
        x = tr.resolve(op.inputs[0])
        return [d if d is not None else Dim(x, i) for i, d in enumerate(op.inputs[0].shape.as_list())]
    if op.type == "Cast":
        return shape_value(tr, op.inputs[0])
    if op.type == "Pack" and op.get_attr("axis") == 0:
        return [dim_value(tr, i) for i in op.inputs]
    if op.type == "ConcatV2" and tr.static(op.inputs[-1]) == 0:
        return [d for part in op.inputs[:-1] for d in dims_value(tr, part)]
    if op.type in ("StridedSlice", "Slice") and op.inputs[0].shape.rank == 1:
        return _slice_vector(tr, op, dims_value(tr, op.inputs[0]))
    if op.type == "Mul":  # static dims scaled (an upsampling's `tf.shape(x)[1:3] * 2`)
        a, b = (np.asarray(shape_value(tr, t), dtype=object) for t in op.inputs)
        if all(isinstance(v, int) for v in [*a.ravel(), *b.ravel()]):
            return (a * b).tolist()
    raise Unsupported(f"{op.type}(run-time shape)", op.name)


def dims_value(tr: Translator, tensor: tf.Tensor) -> list[DimValue]:
    """`shape_value` of a vector (a shape)."""
    value = shape_value(tr, tensor)
    if not isinstance(value, list):
        raise Unsupported("run-time shape (a scalar where a vector was expected)", tensor.op.name)
    return value


def dim_value(tr: Translator, tensor: tf.Tensor) -> DimValue:
    """`shape_value` of a scalar (one dim)."""
    value = shape_value(tr, tensor)
    if isinstance(value, list):
        raise Unsupported("run-time shape (a vector where a scalar was expected)", tensor.op.name)
    return value


def _slice_vector(tr: Translator, op: tf.Operation, vector: list[DimValue]) -> DimValue | list[DimValue]:
    """`vector[begin:end:stride]` (or `vector[begin]`) as a 1-D `StridedSlice` or `Slice` computes it."""
    if op.type == "Slice":
        [begin], [size] = tr.const(op.inputs[1], "begin"), tr.const(op.inputs[2], "size")
        return vector[begin:] if size == -1 else vector[begin:begin + size]
    if op.get_attr("ellipsis_mask") or op.get_attr("new_axis_mask"):
        raise Unsupported("StridedSlice(run-time shape, ellipsis/new axis)", op.name)
    [begin], [end], [stride] = (tr.const(op.inputs[i], "bounds") for i in (1, 2, 3))
    if op.get_attr("shrink_axis_mask") & 1:
        return vector[begin]
    begin = None if op.get_attr("begin_mask") & 1 else begin
    end = None if op.get_attr("end_mask") & 1 else end
    return vector[begin:end:stride]


def part(tr: Translator, name: str, suffix: str) -> str:
    """The name of a node helping to compute node `name`: `name.suffix`, with `_` appended while an op of the
    graph would take that name (TF names an op's own constants `<op>/value`, `<op>/y`, ...)."""
    taken = _op_names(tr.graph)
    candidate = f"{name}.{suffix}"
    while candidate in taken:
        candidate += "_"
    return candidate


@functools.lru_cache(maxsize=2)
def _op_names(graph: tf.Graph) -> frozenset[str]:
    """The node names the graph's ops translate to."""
    return frozenset(layer_name(op.name) for op in graph.get_operations())


def has_node(tr: Translator, name: str) -> bool:
    """Whether a node of that name was emitted already."""
    return any(node["name"] == name for node in tr.out.nodes)


def model_input(tr: Translator) -> tf.Tensor:
    """The first spec input: what places a node that reads no tensor (a constant, a weight) in the graph."""
    return tr.graph.get_tensor_by_name(next(iter(tr.inputs)))


def zeros_along(tr: Translator, name: str, dim: Dim, rank: int, position: int, dtype: str) -> str:
    """A node of zeros of `dtype` and rank `rank`, of `dim`'s run-time length at `position` and 1 elsewhere
    (its vector of zeros, computed from `dim.tensor`, is shared by every user)."""
    source = tr.node(dim.tensor)
    vector = part(tr, source, f"zeros{dim.axis}.{dtype}")
    if not has_node(tr, vector):
        exact = dtype if dtype != "bool" else "int32"  # zeros are summed: bool is counted as int32
        zeros = tr.add(part(tr, vector, "like"), [source], op="zeros_like", dtype=exact)
        others = [a for a in range(dim.tensor.shape.rank) if a != dim.axis]
        if others:
            zeros = tr.add(part(tr, vector, "sum"), [zeros], op="sum", axis=others)
        tr.add(vector, [zeros], op="cast", dtype=dtype)
    if rank == 1:
        return vector
    return tr.add(part(tr, name, f"zeros{position}"), [vector], op="reshape",
                  newshape=[-1 if k == position else 1 for k in range(rank)])


def constant(tr: Translator, tensor: tf.Tensor) -> str:
    """The node holding the value of the constant `tensor` (at most `MAX_CONST` elements), named after its op."""
    name = layer_name(tr.resolve(tensor).op.name)
    if has_node(tr, name):
        return name
    tr.const(tensor, "constant")  # refuses a constant of more than MAX_CONST elements
    return constant_node(tr, name, np.asarray(tr.static(tensor)), tensor.dtype.base_dtype.name, tensor.op.name)


def constant_node(tr: Translator, name: str, value: np.ndarray, dtype: str, node: str) -> str:
    """A node holding `value`: `Rescaling(scale=0, offset=value)` of float zeros of its shape, cast to `dtype`
    (values float32 holds exactly only: refused otherwise, naming the graph's `node`)."""
    exact = value.dtype.kind in "bf" and value.dtype != np.float64 or (
        value.dtype.kind in "iu" and np.abs(value).max(initial=0) <= 2 ** 24)
    if not exact:
        raise Unsupported(f"constant of {value.dtype} (not exact in float32)", node)
    zero = _zero(tr)
    if value.ndim:
        zero = tr.add(part(tr, name, "zeros"), [zero], op="broadcast_to", shape=list(value.shape))
    offset = value.astype(np.float32).tolist()
    if dtype == "float32":
        return tr.add(name, [zero], **{"class": "Rescaling"}, scale=0.0, offset=offset)
    values = tr.add(part(tr, name, "float"), [zero], **{"class": "Rescaling"}, scale=0.0, offset=offset)
    return tr.add(name, [values], op="cast", dtype=dtype)


def _zero(tr: Translator) -> str:
    """The float32 scalar 0 computed from the first spec input (one per model)."""
    anchor = model_input(tr)
    source = tr.node(anchor)
    name = part(tr, source, "zero")
    if not has_node(tr, name):
        zeros = tr.add(part(tr, name, "like"), [source], op="zeros_like", dtype="float32")
        tr.add(name, [zeros], op="sum")
    return name


def weight_node(tr: Translator, tensor: tf.Tensor, anchor: str | None = None) -> str:
    """The `ferry.Weight` node holding the variable `tensor` reads (one per variable), placed in the graph by
    `anchor` (default: the first spec input)."""
    var = tr.variable(tensor)
    name = layer_name(var)
    if not has_node(tr, name):
        tr.bind(var, f"{name}/value")
        tr.add(name, [anchor or tr.node(model_input(tr))], **{"class": "ferry.Weight"}, shape=tensor.shape.as_list())
    return name


def operand(tr: Translator, tensor: tf.Tensor) -> str:
    """The node of any operand: a `ferry.Weight` for a variable, a constant node for a constant, else the op's."""
    if tr.variable(tensor):
        return weight_node(tr, tensor)
    if tr.static(tensor) is not None:
        return constant(tr, tensor)
    return tr.node(tensor)


def scalar(tr: Translator, tensor: tf.Tensor) -> float | int | bool | None:
    """The value of a constant scalar (an argument of a node), else None."""
    value = tr.static(tensor)
    return tr.const(tensor, "operand") if value is not None and np.ndim(value) == 0 else None


def broadcast(tr: Translator, name: str, node: str, repeats: list[DimValue], dtype: str) -> str:
    """`node` tiled by the static `repeats`, and broadcast along each run-time one (where its size is 1) by
    adding zeros of that length; the last node named `name`."""
    dynamic = [k for k, r in enumerate(repeats) if isinstance(r, Dim)]
    static = [1 if isinstance(r, Dim) else r for r in repeats]
    if any(r != 1 for r in static):
        node = tr.add(name if not dynamic else part(tr, name, "tile"), [node], op="tile", repeats=static)
    for i, k in enumerate(dynamic):
        zeros = zeros_along(tr, name, repeats[k], len(repeats), k, dtype)
        node = tr.add(name if i == len(dynamic) - 1 else part(tr, name, f"along{k}"), [node, zeros], op="add")
    return node


def chain(tr: Translator, name: str, node: str, steps: list[dict[str, Any]]) -> str:
    """`steps` (each an `op` and its arguments) applied one after another to `node`, the last node named `name`
    and the others `name.<op><i>`; with no step, `node` itself."""
    for i, step in enumerate(steps):
        node = tr.add(name if i == len(steps) - 1 else part(tr, name, f"{step['op']}{i}"), [node], **step)
    return node


def output_name(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """The node name of one output of a multi-output op: the op's for the first, `<op>.<k>` for the others."""
    name = layer_name(op.name)
    return name if tensor.value_index == 0 else part(tr, name, str(tensor.value_index))
