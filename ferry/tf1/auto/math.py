"""Elementwise, matmul and reduction ops, translated one by one into `keras.ops` calls; a variable used
directly by an elementwise op (a hand-written layer norm's gamma, a position table) becomes a
`ferry.Weight` node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, handles, layer_name

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator

# TF op -> keras.ops function.
UNARY = {"Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid", "Tanh": "tanh",
         "Softplus": "softplus", "Exp": "exp", "Log": "log", "Neg": "negative", "Sqrt": "sqrt", "Rsqrt": "rsqrt",
         "Square": "square", "Abs": "abs", "Erf": "erf", "Reciprocal": "reciprocal", "Floor": "floor"}
BINARY = {"Add": "add", "AddV2": "add", "Sub": "subtract", "Mul": "multiply", "RealDiv": "divide",
          "Maximum": "maximum", "Minimum": "minimum", "Pow": "power", "SquaredDifference": "subtract",
          "BatchMatMulV2": "matmul", "BatchMatMul": "matmul"}  # SquaredDifference: square(subtract)
REDUCE = {"Mean": "mean", "Sum": "sum", "Max": "max", "Min": "min", "Prod": "prod"}


@handles(*UNARY)
def unary(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`UNARY[op.type]` of the input."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op=UNARY[op.type])


@handles("LeakyRelu")
def leaky_relu(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`leaky_relu` with the op's `alpha` as its slope."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="leaky_relu", negative_slope=op.get_attr("alpha"))


@handles("Softmax")
def softmax(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`softmax` over the last axis, as TF1's op computes it."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="softmax", axis=-1)


@handles(*REDUCE)
def reduce(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`REDUCE[op.type]` over the constant axes, keeping dims as the op does."""
    axis = tr.const(op.inputs[1], "axis")
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op=REDUCE[op.type], axis=axis,
                  keepdims=bool(op.get_attr("keep_dims")))


@handles("ArgMax", "ArgMin")
def arg_extreme(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`argmax`/`argmin` over the constant axis, cast to the op's index type (TF1's default: int64)."""
    name = layer_name(op.name)
    axis = int(tr.const(op.inputs[1], "axis"))
    index = tr.add(f"{name}.index", [tr.node(op.inputs[0])], op=op.type.lower(), axis=axis)
    return tr.add(name, [index], op="cast", dtype=op.get_attr("output_type").name)


@handles("Cast")
def cast(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`cast` to the op's `DstT`."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="cast", dtype=op.get_attr("DstT").name)


@handles(*BINARY, reads_variables=True)
def binary(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Two tensors, or a tensor and a constant (an argument of the node), or a tensor and a variable (a
    `ferry.Weight` node)."""
    name = layer_name(op.name)
    if any(tr.variable(i) for i in op.inputs):
        return tr.add(name, [weight_operand(tr, i, op) for i in op.inputs[:2]], op=BINARY[op.type])
    a, b = op.inputs[0], op.inputs[1]
    ca, cb = tr.static(a), tr.static(b)
    if op.type == "SquaredDifference":
        diff = tr.add(f"{name}.diff", [tr.node(a), tr.node(b)], op="subtract")
        return tr.add(name, [diff], op="square")
    fn = BINARY[op.type]
    if op.type.startswith("BatchMatMul"):
        nodes = [tr.node(a), tr.node(b)]
        for i, attr in enumerate(("adj_x", "adj_y")):
            if op.get_attr(attr):
                nodes[i] = tr.add(f"{name}.{attr}", [nodes[i]], op="swapaxes", axis1=-1, axis2=-2)
        return tr.add(name, nodes, op=fn)
    if ca is None and cb is None:
        return tr.add(name, [tr.node(a), tr.node(b)], op=fn)
    if cb is not None and ca is None:
        return tr.add(name, [tr.node(a)], op=fn, args=[tr.const(b, "operand")])
    if ca is not None and cb is None and fn in ("add", "multiply", "maximum", "minimum"):
        return tr.add(name, [tr.node(b)], op=fn, args=[tr.const(a, "operand")])
    if ca is not None and cb is None and fn == "subtract":  # c - x = (-x) + c
        neg = tr.add(f"{name}.neg", [tr.node(b)], op="negative")
        return tr.add(name, [neg], op="add", args=[tr.const(a, "operand")])
    raise Unsupported(f"{op.type}(constant first operand)", op.name)


def weight_operand(tr: Translator, tensor: tf.Tensor, op: tf.Operation) -> str:
    """An operand of an elementwise op: a node, or a `ferry.Weight` holding the variable it reads."""
    var = tr.variable(tensor)
    if not var:
        return tr.node(tensor)
    if op.type == "SquaredDifference":
        raise Unsupported("SquaredDifference(variable)", op.name)
    name = layer_name(var)
    if name not in {n["name"] for n in tr.out.nodes}:
        other = next(tr.node(i) for i in op.inputs[:2] if not tr.variable(i))
        tr.bind(var, f"{name}/value")
        tr.add(name, [other], **{"class": "ferry.Weight"}, shape=tensor.shape.as_list())
    return name
