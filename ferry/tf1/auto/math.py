"""Elementwise, matmul and reduction ops, translated one by one into `keras.ops` calls; a variable used
directly by an elementwise op (a hand-written layer norm's gamma, a position table) becomes a
`ferry.Weight` node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.auto.values import chain, operand, part, scalar, weight_node

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator

# TF op -> keras.ops function.
UNARY = {"Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid", "Tanh": "tanh",
         "Softplus": "softplus", "Exp": "exp", "Log": "log", "Neg": "negative", "Sqrt": "sqrt", "Rsqrt": "rsqrt",
         "Square": "square", "Abs": "abs", "Erf": "erf", "Reciprocal": "reciprocal", "Floor": "floor",
         "LogicalNot": "logical_not"}
BINARY = {"Add": "add", "AddV2": "add", "Sub": "subtract", "Mul": "multiply", "RealDiv": "divide",
          "Maximum": "maximum", "Minimum": "minimum", "Pow": "power", "SquaredDifference": "subtract",
          "BatchMatMulV2": "matmul", "BatchMatMul": "matmul",  # SquaredDifference: square(subtract)
          "Greater": "greater", "GreaterEqual": "greater_equal", "Less": "less", "LessEqual": "less_equal",
          "Equal": "equal", "NotEqual": "not_equal", "LogicalAnd": "logical_and", "LogicalOr": "logical_or"}
COMMUTATIVE = {"add", "multiply", "maximum", "minimum", "equal", "not_equal", "logical_and", "logical_or"}
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
    index = tr.add(part(tr, name, "index"), [tr.node(op.inputs[0])], op=op.type.lower(), axis=axis)
    return tr.add(name, [index], op="cast", dtype=op.get_attr("output_type").name)


@handles("Cast")
def cast(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`cast` to the op's `DstT`."""
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], op="cast", dtype=op.get_attr("DstT").name)


@handles(*BINARY, reads_variables=True)
def binary(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Two tensors, or a tensor and a constant scalar (an argument of the node) or array (a constant node), or
    a tensor and a variable (a `ferry.Weight` node)."""
    name = layer_name(op.name)
    if any(tr.variable(i) for i in op.inputs):
        return tr.add(name, [weight_operand(tr, i, op) for i in op.inputs[:2]], op=BINARY[op.type])
    a, b = op.inputs[0], op.inputs[1]
    if op.type == "SquaredDifference":
        diff = tr.add(part(tr, name, "diff"), [operand(tr, a), operand(tr, b)], op="subtract")
        return tr.add(name, [diff], op="square")
    fn = BINARY[op.type]
    if op.type.startswith("BatchMatMul"):
        nodes = [operand(tr, a), operand(tr, b)]
        for i, attr in enumerate(("adj_x", "adj_y")):
            if op.get_attr(attr):
                nodes[i] = tr.add(part(tr, name, attr), [nodes[i]], op="swapaxes", axis1=-1, axis2=-2)
        return tr.add(name, nodes, op=fn)
    sa, sb = scalar(tr, a), scalar(tr, b)
    if sb is not None and sa is None:
        return tr.add(name, [tr.node(a)], op=fn, args=[sb])
    if sa is not None and sb is None and fn in COMMUTATIVE:
        return tr.add(name, [tr.node(b)], op=fn, args=[sa])
    if sa is not None and sb is None and fn == "subtract":  # c - x = (-x) + c
        neg = tr.add(part(tr, name, "neg"), [tr.node(b)], op="negative")
        return tr.add(name, [neg], op="add", args=[sa])
    return tr.add(name, [operand(tr, a), operand(tr, b)], op=fn)


def weight_operand(tr: Translator, tensor: tf.Tensor, op: tf.Operation) -> str:
    """An operand of an elementwise op: a node, or a `ferry.Weight` holding the variable it reads (placed in the
    graph by the other operand)."""
    if not tr.variable(tensor):
        return operand(tr, tensor)
    if op.type == "SquaredDifference":
        raise Unsupported("SquaredDifference(variable)", op.name)
    other = next((i for i in op.inputs[:2] if not tr.variable(i)), None)
    return weight_node(tr, tensor, operand(tr, other) if other is not None else None)


@handles("Cumsum")
def cumsum(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`cumsum` along the constant axis; `reverse`: between two `flip`s; `exclusive`: of the input shifted by one
    (a zero padded in front, the last dropped)."""
    x = op.inputs[0]
    rank = x.shape.rank
    axis = int(tr.const(op.inputs[1], "axis")) % rank
    flip = [{"op": "flip", "axis": axis}] if op.get_attr("reverse") else []
    shift = []
    if op.get_attr("exclusive"):
        length = x.shape.as_list()[axis]
        if length is None:
            raise Unsupported("Cumsum(exclusive, along a run-time dim)", op.name)
        pad, size = [[0, 0]] * rank, [-1] * rank
        pad[axis], size[axis] = [1, 0], length
        shift = [{"op": "pad", "pad_width": pad}, {"op": "slice", "start_indices": [0] * rank, "shape": size}]
    steps = [*flip, *shift, {"op": "cumsum", "axis": axis}, *flip]
    return chain(tr, layer_name(op.name), tr.node(x), steps)


@handles("ClipByValue")
def clip_by_value(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`clip` between constant scalar bounds; other bounds: `maximum`, then `minimum`."""
    name = layer_name(op.name)
    x, low, high = op.inputs
    lo, hi = scalar(tr, low), scalar(tr, high)
    if lo is not None and hi is not None:
        return tr.add(name, [tr.node(x)], op="clip", x_min=lo, x_max=hi)
    floor = tr.add(part(tr, name, "max"), [tr.node(x), operand(tr, low)], op="maximum")
    return tr.add(name, [floor, operand(tr, high)], op="minimum")


# -- einsum ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DenseEinsum:
    """An einsum of a tensor `x` with a variable kernel (read directly, or through a `Reshape`: `reshaped`), as
    Keras' `EinsumDense` computes it: `equation` with x first."""

    x: tf.Tensor
    kernel: str
    reshaped: bool
    equation: str


def read_variable(tr: Translator, tensor: tf.Tensor) -> tuple[str, bool] | None:
    """(the variable `tensor` reads, whether through a `Reshape`), e.g. BERT's flat kernels reshaped per head."""
    var = tr.variable(tensor)
    if var:
        return var, False
    op = tr.resolve(tensor).op
    if op.type == "Reshape" and tr.variable(op.inputs[0]) and tensor.shape.is_fully_defined():
        return tr.variable(op.inputs[0]), True
    return None


def dense_einsum(tr: Translator, op: tf.Operation) -> DenseEinsum | None:
    """The `EinsumDense` form of a two-operand `Einsum` with one variable operand, when Keras' layer can compute
    it: no ellipsis, the output led by the input's first (batch) index, every kernel index in the input or
    output."""
    equation = op.get_attr("equation").decode()
    if len(op.inputs) != 2 or "..." in equation:
        return None
    specs, out = equation.split("->")
    specs = specs.split(",")
    for k in (1, 0):
        read, other = read_variable(tr, op.inputs[k]), read_variable(tr, op.inputs[1 - k])
        x_spec, w_spec = specs[1 - k], specs[k]
        if read and not other and out[:1] == x_spec[:1] and x_spec[:1] not in w_spec and all(
                c in x_spec or c in out for c in w_spec) and all(len(set(s)) == len(s) for s in (x_spec, w_spec, out)):
            return DenseEinsum(op.inputs[1 - k], read[0], read[1], f"{x_spec},{w_spec}->{out}")
    return None


def einsum_dense(tr: Translator, op: tf.Operation, dense: DenseEinsum, bias: tf.Tensor | None = None) -> str:
    """One `EinsumDense` layer named after the kernel's scope; a kernel or bias stored in another shape is bound
    through the `reshape` transform."""
    x = tr.node(dense.x)  # first: the layer's name must be unique among the nodes so far
    name = tr.unique(layer_name(dense.kernel.rsplit("/", 1)[0]), dense.kernel)
    tr.bind(dense.kernel, f"{name}/kernel", "reshape" if dense.reshaped else None)
    out = op.outputs[0].shape.as_list()
    spec = dense.equation.split("->")[1]
    bias_axes = None
    if bias is not None:
        var, reshaped = read_variable(tr, bias)
        bias_axes = spec[len(spec) - bias.shape.rank:]
        tr.bind(var, f"{name}/bias", "reshape" if reshaped else None)
    return tr.add(name, [x], **{"class": "EinsumDense"}, equation=dense.equation, output_shape=out[1:],
                  bias_axes=bias_axes)


def einsum_bias(tr: Translator, add: tf.Operation) -> tuple[tf.Operation, DenseEinsum, tf.Tensor] | None:
    """`einsum(x, kernel) + bias` (BERT's `dense_layer_3d`): the Einsum and a variable bias (read directly or
    through a `Reshape`) spanning its last axes."""
    if add.type == "BiasAdd" and add.get_attr("data_format") != b"NHWC":
        return None
    for k in (0, 1) if add.type != "BiasAdd" else (0,):
        inner, bias = tr.resolve(add.inputs[k]).op, add.inputs[1 - k]
        if inner.type != "Einsum" or not read_variable(tr, bias):
            continue
        dense, out, rank = dense_einsum(tr, inner), inner.outputs[0].shape.as_list(), bias.shape.rank
        if dense and rank and rank < len(out) and bias.shape.as_list() == out[len(out) - rank:]:
            return inner, dense, bias
    return None


def einsum_dense_with_bias(tr: Translator, add: tf.Operation,
                           matched: tuple[tf.Operation, DenseEinsum, tf.Tensor]) -> str:
    inner, dense, bias = matched
    return einsum_dense(tr, inner, dense, bias)


@handles("Einsum", reads_variables=True)
def einsum(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """A variable operand: `EinsumDense` (with its bias: a fusion); else `keras.ops` sums, transposes, reshapes and
    one `matmul` (`keras.ops.einsum` takes the equation first, which a graph node cannot give it)."""
    dense = dense_einsum(tr, op)
    if dense:
        return einsum_dense(tr, op, dense)
    equation = op.get_attr("equation").decode()
    specs, out = equation.split("->")
    specs = specs.split(",")
    if "..." in equation or len(specs) > 2 or any(len(set(s)) != len(s) for s in [*specs, out]):
        raise Unsupported("Einsum(ellipsis, repeated index or more than two operands)", op.name)
    sizes: dict[str, int | None] = {}
    for spec, t in zip(specs, op.inputs):
        for c, d in zip(spec, t.shape.as_list()):
            sizes[c] = d if sizes.get(c) is None else sizes[c]
    return _einsum_nodes(tr, op, layer_name(op.name), [operand(tr, t) for t in op.inputs], specs, out, sizes)


def _einsum_nodes(tr: Translator, op: tf.Operation, name: str, nodes: list[str], specs: list[str], out: str,
                  sizes: dict[str, int | None]) -> str:
    """The einsum `specs -> out` of `nodes`: indices of one operand only, not in the output, summed first; then
    (two operands) each transposed to [batch, free, contracted] and reshaped to three axes where needed, one
    `matmul`, reshaped and transposed to `out`. The last node is named `name`."""
    steps: list[tuple[str, list[str], dict[str, Any]]] = []  # (suffix, inputs, node), the last named `name`

    def emit(suffix: str, inputs: list[str], **node: Any) -> str:
        steps.append((suffix, inputs, node))
        return part(tr, name, suffix)

    for i, spec in enumerate(specs):
        kept = set(out).union(*(s for j, s in enumerate(specs) if j != i))
        summed = [k for k, c in enumerate(spec) if c not in kept]
        if summed:
            nodes[i] = emit(f"sum{i}", [nodes[i]], op="sum", axis=summed)
            specs[i] = "".join(c for c in spec if c in kept)
    if len(specs) == 1:
        node, order = nodes[0], specs[0]
    else:
        (a, b), (left, right) = specs, nodes
        batch = [c for c in a if c in b]  # shared and in the output (the others were summed)
        contracted = [c for c in batch if c not in out]
        batch = [c for c in batch if c in out]
        free_a, free_b = [c for c in a if c not in b], [c for c in b if c not in a]
        if list(out) == batch + free_b + free_a != batch + free_a + free_b:  # the output as b @ a: no transpose
            (a, left, free_a), (b, right, free_b) = (b, right, free_b), (a, left, free_a)
        left = _permuted(emit, "left", left, a, batch + free_a + contracted)
        right = _permuted(emit, "right", right, b, batch + contracted + free_b)
        grouped = not (len(free_a) == len(contracted) == len(free_b) == 1)
        if grouped:
            left = emit("left_3d", [left], op="reshape",
                        newshape=_dims(op, sizes, [*([c] for c in batch), free_a, contracted]))
            right = emit("right_3d", [right], op="reshape",
                         newshape=_dims(op, sizes, [*([c] for c in batch), contracted, free_b]))
        node = emit("matmul", [left, right], op="matmul")
        order = "".join(batch + free_a + free_b)
        if grouped:
            node = emit("unflat", [node], op="reshape", newshape=_dims(op, sizes, [[c] for c in order]))
    node = _permuted(emit, "transpose", node, order, list(out))
    if not steps:
        return node
    for i, (suffix, inputs, node) in enumerate(steps):
        tr.add(name if i == len(steps) - 1 else part(tr, name, suffix), inputs, **node)
    return name


def _permuted(emit: Callable[..., str], suffix: str, node: str, spec: str | list[str], order: list[str]) -> str:
    """`node` (indices `spec`) transposed to `order`, or itself when already in it."""
    axes = [list(spec).index(c) for c in order]
    return node if axes == sorted(axes) else emit(suffix, [node], op="transpose", axes=axes)


def _dims(op: tf.Operation, sizes: dict[str, int | None], groups: list[list[str]]) -> list[int]:
    """A reshape target with one axis per group of indices (their sizes' product); one run-time size: -1."""
    shape = []
    for group in groups:
        known = [sizes[c] for c in group]
        shape.append(-1 if None in known else int(np.prod(known, dtype=np.int64)))
    if shape.count(-1) > 1:
        raise Unsupported("Einsum(several run-time dims)", op.name)
    return shape


# -- activations and normalizations written op by op (fusions.py) -------------------------------------------

SQRT_2, SQRT_2_OVER_PI, GELU_CUBIC = float(np.sqrt(2.0)), float(np.sqrt(2.0 / np.pi)), 0.044715


def _is(tr: Translator, tensor: tf.Tensor, value: float) -> bool:
    """Whether `tensor` is the constant scalar `value` (to float32's precision)."""
    found = tr.static(tensor)
    return found is not None and np.size(found) == 1 and bool(np.isclose(float(found), value, rtol=1e-6, atol=0))


def _factors(tr: Translator, tensor: tf.Tensor, stop: tf.Tensor | None = None) -> list[tf.Tensor]:
    """The factors of a product of `Mul`s, not looking into `stop`."""
    tensor = tr.resolve(tensor)
    if tensor.op.type != "Mul" or (stop is not None and tensor.name == stop.name):
        return [tensor]
    return [f for t in tensor.op.inputs for f in _factors(tr, t, stop)]


def _power_of(tr: Translator, factors: list[tf.Tensor], x: tf.Tensor) -> int:
    """The power of `x` the factors multiply up to (`x`, `Square(x)`, `Pow(x, n)`), or -1 if one is not a power of x."""
    power = 0
    for f in factors:
        if f.name == x.name:
            power += 1
        elif f.op.type == "Square" and tr.resolve(f.op.inputs[0]).name == x.name:
            power += 2
        elif f.op.type == "Pow" and tr.resolve(f.op.inputs[0]).name == x.name and _is(tr, f.op.inputs[1], 3.0):
            power += 3
        else:
            return -1
    return power


def _one_plus(tr: Translator, tensor: tf.Tensor, kind: str) -> tf.Operation | None:
    """The `kind` op (Erf, Tanh) of `1 + kind(...)`."""
    op = tr.resolve(tensor).op
    if op.type not in ("Add", "AddV2"):
        return None
    for k in (0, 1):
        inner = tr.resolve(op.inputs[1 - k]).op
        if _is(tr, op.inputs[k], 1.0) and inner.type == kind:
            return inner
    return None


def _erf_input(tr: Translator, erf: tf.Operation) -> tf.Tensor | None:
    """x, when the Erf computes `erf(x / sqrt 2)` (a division, or a product with 1 / sqrt 2)."""
    arg = tr.resolve(erf.inputs[0]).op
    if arg.type == "RealDiv" and _is(tr, arg.inputs[1], SQRT_2):
        return tr.resolve(arg.inputs[0])
    if arg.type == "Mul":
        for k in (0, 1):
            if _is(tr, arg.inputs[k], 1.0 / SQRT_2):
                return tr.resolve(arg.inputs[1 - k])
    return None


def _tanh_input(tr: Translator, tanh: tf.Operation) -> tf.Tensor | None:
    """x, when the Tanh computes `tanh(sqrt(2/pi) * (x + 0.044715 * x^3))`."""
    arg = tr.resolve(tanh.inputs[0]).op
    if arg.type != "Mul":
        return None
    for k in (0, 1):
        inner = tr.resolve(arg.inputs[1 - k]).op
        if not _is(tr, arg.inputs[k], SQRT_2_OVER_PI) or inner.type not in ("Add", "AddV2"):
            continue
        for j in (0, 1):
            x = tr.resolve(inner.inputs[j])
            factors = _factors(tr, inner.inputs[1 - j], stop=x)
            coefficients = [f for f in factors if _is(tr, f, GELU_CUBIC)]
            if len(coefficients) == 1 and _power_of(tr, [f for f in factors if f is not coefficients[0]], x) == 3:
                return x
    return None


def gelu_pattern(tr: Translator, root: tf.Operation) -> tuple[tf.Tensor, bool] | None:
    """GELU written op by op, the product of x, 0.5 and `1 + erf(x / sqrt 2)` (exact) or `1 + tanh(sqrt(2/pi) *
    (x + 0.044715 x^3))` (BERT's approximation), in any order: (x, approximate)."""
    for one_plus in _factors(tr, root.outputs[0]):
        for kind, input_of in (("Erf", _erf_input), ("Tanh", _tanh_input)):
            inner = _one_plus(tr, one_plus, kind)
            x = input_of(tr, inner) if inner is not None else None
            if x is None:
                continue
            rest = [f for f in _factors(tr, root.outputs[0], stop=x) if f.name != one_plus.name]
            halves = [f for f in rest if _is(tr, f, 0.5)]
            if len(rest) == 2 and len(halves) == 1 and _power_of(tr, [f for f in rest if f is not halves[0]], x) == 1:
                return x, kind == "Tanh"
    return None


def gelu(tr: Translator, root: tf.Operation, matched: tuple[tf.Tensor, bool]) -> str:
    """`keras.ops.gelu` (approximate for the tanh form: the same formula)."""
    x, approximate = matched
    return tr.add(layer_name(root.name), [tr.node(x)], op="gelu", approximate=approximate)


def l2_normalize_pattern(tr: Translator, root: tf.Operation) -> tuple[tf.Tensor, list[int], float] | None:
    """`tf.nn.l2_normalize`: `x * rsqrt(maximum(sum(square(x), axes, keepdims), epsilon))`: (x, axes, epsilon)."""
    for k in (0, 1):
        x, rsqrt = tr.resolve(root.inputs[k]), tr.resolve(root.inputs[1 - k]).op
        maximum = tr.resolve(rsqrt.inputs[0]).op if rsqrt.type == "Rsqrt" else None
        if maximum is None or maximum.type != "Maximum":
            continue
        for j in (0, 1):
            total, epsilon = tr.resolve(maximum.inputs[j]).op, tr.static(maximum.inputs[1 - j])
            square = tr.resolve(total.inputs[0]).op if total.type == "Sum" and total.get_attr("keep_dims") else None
            if (square is not None and square.type == "Square" and tr.resolve(square.inputs[0]).name == x.name
                    and epsilon is not None and np.size(epsilon) == 1 and float(epsilon) > 0):
                axes = np.reshape(tr.const(total.inputs[1], "axis"), -1).tolist()
                return x, axes, float(epsilon)
    return None


def l2_normalize(tr: Translator, root: tf.Operation, matched: tuple[tf.Tensor, list[int], float]) -> str:
    """`keras.ops.normalize`: `x * minimum(rsqrt(sum(x^2)), 1 / epsilon)`, so its epsilon is the square root of TF's."""
    x, axes, epsilon = matched
    return tr.add(layer_name(root.name), [tr.node(x)], op="normalize", axis=axes[0] if len(axes) == 1 else axes,
                  order=2, epsilon=float(np.sqrt(epsilon)))
