"""Layers with weights, and the other `tf.nn` layers: convolutions and dense (`linear`, also fused with
a `BiasAdd` or written as a tensordot: see `fusions.py`), batch norm, embeddings, pooling, padding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ferry.facts import float32
from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.auto.values import dims_value, part, weight_node

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator

LINEAR = frozenset({"Conv2D", "DepthwiseConv2dNative", "MatMul", "Conv2DBackpropInput", "Conv3D"})
CONV_CLASSES = {"Conv2D": "Conv2D", "DepthwiseConv2dNative": "DepthwiseConv2D",
                "Conv2DBackpropInput": "Conv2DTranspose", "Conv3D": "Conv3D"}
TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]


def linear(tr: Translator, op: tf.Operation, bias: tf.Operation | None, x: tf.Tensor | None = None) -> str:
    """Conv2D / DepthwiseConv2dNative / Conv2DBackpropInput / Conv3D / MatMul (+ BiasAdd) with variable weights
    -> one layer (applied to `x` instead of the op's own input for a tensordot). NCHW convolutions run NHWC
    between two transposes (Keras' channels_first convolutions have no CPU kernel on TensorFlow); explicit
    padding becomes a `ZeroPadding2D` before a VALID convolution."""
    kernel_var = tr.variable(op.inputs[1])
    bias_var = tr.variable(bias.inputs[1]) if bias is not None else None
    if bias is not None and not bias_var:
        raise Unsupported("BiasAdd", bias.name)
    if x is None:
        x = op.inputs[2] if op.type == "Conv2DBackpropInput" else op.inputs[0]
    x = tr.node(x)  # first: the name must be unique among nodes so far
    name = tr.unique(layer_name(kernel_var.rsplit("/", 1)[0]), kernel_var)
    shape = op.inputs[1].shape.as_list()
    nchw = False
    if op.type == "MatMul":
        if op.get_attr("transpose_a"):
            raise Unsupported("MatMul(transpose_a)", op.name)
        units = shape[0] if op.get_attr("transpose_b") else shape[1]
        transposed = {"transpose": {"perm": [1, 0]}} if op.get_attr("transpose_b") else None
        tr.bind(kernel_var, f"{name}/kernel", transposed)
        config = {"class": "Dense", "units": units}
    else:
        config, x, nchw = _conv_config(tr, op, name, x, shape)
        tr.bind(kernel_var, f"{name}/kernel")  # Keras 3 names the depthwise kernel `kernel` too
    if bias_var:
        tr.bind(bias_var, f"{name}/bias")
    out = tr.add(name, [x], **config, use_bias=bool(bias_var))
    return tr.add(part(tr, name, "nchw"), [out], op="transpose", axes=TO_NCHW) if nchw else out


def _conv_config(tr: Translator, op: tf.Operation, name: str, x: str,
                 shape: list[int]) -> tuple[dict[str, Any], str, bool]:
    """A convolution's layer config, its input node (transposed to NHWC, padded explicitly) and whether it is
    NCHW (its output then transposed back)."""
    data_format = op.get_attr("data_format").decode()
    spatial = 3 if op.type == "Conv3D" else 2
    if data_format not in ("NHWC", "NDHWC") and not (data_format == "NCHW" and spatial == 2):
        raise Unsupported(f"{op.type}({data_format})", op.name)
    nchw = data_format == "NCHW"
    axes = slice(2, 4) if nchw else slice(1, 1 + spatial)
    if nchw:
        x = tr.add(part(tr, name, "nhwc"), [x], op="transpose", axes=TO_NHWC)
    padding = op.get_attr("padding").decode()
    if padding == "EXPLICIT" and op.type in ("Conv2D", "DepthwiseConv2dNative"):
        pads = np.asarray(op.get_attr("explicit_paddings")).reshape(4, 2)[axes].tolist()
        x = tr.add(part(tr, name, "pad"), [x], **{"class": "ZeroPadding2D"}, padding=pads)
        padding = "VALID"
    if padding not in ("SAME", "VALID"):
        raise Unsupported(f"{op.type}(padding={padding})", op.name)
    strides = op.get_attr("strides")[axes]
    dilations = op.get_attr("dilations")[axes]
    config: dict[str, Any] = {"class": CONV_CLASSES[op.type], "kernel_size": shape[:spatial], "strides": strides,
                              "padding": padding.lower(), "dilation_rate": dilations}
    if op.type == "DepthwiseConv2dNative":
        config["depth_multiplier"] = shape[3]
    elif op.type == "Conv2DBackpropInput":
        config["filters"] = shape[2]  # TF1's filter is [h, w, out, in], as Keras' Conv2DTranspose kernel
        _check_transposed_size(tr, op, config, nchw)
    else:
        config["filters"] = shape[-1]
    return config, x, nchw


def _check_transposed_size(tr: Translator, op: tf.Operation, config: dict[str, Any], nchw: bool) -> None:
    """Keras' Conv2DTranspose computes its output size; TF1's op is told it (`input_sizes`): refuse a size
    Keras would not compute (an `output_padding` TF1 graphs rarely carry)."""
    if config["dilation_rate"] != [1, 1]:
        raise Unsupported("Conv2DBackpropInput(dilations)", op.name)
    sizes = dims_value(tr, op.inputs[0])
    hw = sizes[2:4] if nchw else sizes[1:3]
    given = op.inputs[2].shape.as_list()
    given = given[2:4] if nchw else given[1:3]
    for want, size, k, s in zip(hw, given, config["kernel_size"], config["strides"]):
        if not isinstance(want, int) or size is None:
            raise Unsupported("Conv2DBackpropInput(run-time spatial size)", op.name)
        keras_size = size * s if config["padding"] == "same" else size * s + max(k - s, 0)
        if want != keras_size:
            raise Unsupported(f"Conv2DBackpropInput(output size {want}, Keras computes {keras_size})", op.name)


@handles(*LINEAR, reads_variables=True)
def linear_without_bias(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """A convolution or MatMul with a variable kernel and no `BiasAdd` after it -> a layer without bias."""
    if not tr.variable(op.inputs[1]):
        raise Unsupported(op.type, op.name)
    return linear(tr, op, bias=None)


def tensordot(tr: Translator, tensor: tf.Tensor) -> tuple[tf.Operation, tf.Tensor] | None:
    """`Reshape(MatMul(Reshape(x, [-1, d]), W))`, as `tf.layers.dense` on a rank>2 `x` writes it:
    (the MatMul, x), so it becomes one Dense applied to x."""
    reshaped = tr.resolve(tensor).op
    if reshaped.type != "Reshape":
        return None
    matmul = tr.resolve(reshaped.inputs[0]).op
    if matmul.type != "MatMul" or not tr.variable(matmul.inputs[1]):
        return None
    flat = tr.resolve(matmul.inputs[0]).op
    if flat.type != "Reshape" or (flat.inputs[0].shape.rank or 0) < 3:
        return None
    return matmul, flat.inputs[0]


@handles("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", reads_variables=True)
def batch_norm(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """FusedBatchNorm* at inference -> `ferry.TF1BatchNormalization`, Keras' `BatchNormalization` computing
    inference in the fused kernel's order (epsilon from the op; no gamma/beta allowed; NCHW: axis 1)."""
    if op.get_attr("is_training"):
        raise Unsupported(f"{op.type}(is_training=True)", op.name)
    x, scale, offset, mean, variance = op.inputs[:5]
    mean_var, var_var = tr.variable(mean), tr.variable(variance)
    if not (mean_var and var_var):
        raise Unsupported(f"{op.type}(constant statistics)", op.name)
    name = layer_name(mean_var.rsplit("/", 1)[0])
    gamma, beta = tr.variable(scale), tr.variable(offset)
    for var, weight in ((gamma, "gamma"), (beta, "beta"), (mean_var, "moving_mean"), (var_var, "moving_variance")):
        if var:
            tr.bind(var, f"{name}/{weight}")
    for const, ones in ((scale, 1.0), (offset, 0.0)):
        if tr.variable(const) is None and not np.allclose(tr.const(const, "constant"), ones):
            raise Unsupported(f"{op.type}(constant scale/offset)", op.name)
    data_format = op.get_attr("data_format").decode()
    if data_format not in ("NHWC", "NCHW"):
        raise Unsupported(f"{op.type}({data_format})", op.name)
    axis = {"axis": 1} if data_format == "NCHW" else {}
    return tr.add(name, [tr.node(x)], **{"class": "ferry.TF1BatchNormalization"}, **axis,
                  epsilon=float32(op.get_attr("epsilon")), scale=bool(gamma), center=bool(beta))


@handles("GatherV2", "Gather", "ResourceGather", reads_variables=True)
def embedding(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """A gather from a variable table (axis 0) -> Embedding."""
    var = tr.variable(op.inputs[0])
    if not var:
        raise Unsupported(op.type, op.name)
    if op.type == "GatherV2" and int(tr.const(op.inputs[2], "axis")) != 0:
        raise Unsupported("GatherV2(axis!=0)", op.name)
    table = tr.graph.get_operation_by_name(var)  # a resource gather reads the handle, a scalar: ask the variable
    shape = tf.TensorShape(table.get_attr("shape")) if table.type == "VarHandleOp" else table.outputs[0].shape
    rows, width = shape.as_list()
    name = layer_name(var)
    tr.bind(var, f"{name}/embeddings")
    return tr.add(name, [tr.node(op.inputs[1])], **{"class": "Embedding"}, input_dim=rows, output_dim=width)


@handles("MaxPool", "AvgPool")
def pool(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """MaxPool / AvgPool -> MaxPooling2D / AveragePooling2D (NCHW: `channels_first`)."""
    data_format = op.get_attr("data_format").decode()
    if data_format not in ("NHWC", "NCHW"):
        raise Unsupported(f"{op.type}({data_format})", op.name)
    axes = slice(1, 3) if data_format == "NHWC" else slice(2, 4)
    cls = "MaxPooling2D" if op.type == "MaxPool" else "AveragePooling2D"
    first = {"data_format": "channels_first"} if data_format == "NCHW" else {}
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], **{"class": cls},
                  pool_size=op.get_attr("ksize")[axes], strides=op.get_attr("strides")[axes],
                  padding=op.get_attr("padding").decode().lower(), **first)


@handles("BiasAdd", reads_variables=True)
def bias_add(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """A `BiasAdd` on no layer: the input plus the bias (a `ferry.Weight`; NCHW: reshaped along axis 1)."""
    if not tr.variable(op.inputs[1]):
        raise Unsupported("BiasAdd(constant bias)", op.name)
    x = tr.node(op.inputs[0])
    bias = weight_node(tr, op.inputs[1])
    name = layer_name(op.name)
    if op.get_attr("data_format").decode() == "NCHW":
        rank = op.inputs[0].shape.rank
        if rank is None:
            raise Unsupported("BiasAdd(NCHW, unknown rank)", op.name)
        bias = tr.add(part(tr, name, "channels"), [bias], op="reshape", newshape=[-1] + [1] * (rank - 2))
    return tr.add(name, [x, bias], op="add")


@handles("Pad")
def pad(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Zero padding of H and W -> ZeroPadding2D; any other constant padding -> `keras.ops.pad`."""
    name = layer_name(op.name)
    paddings = tr.const(op.inputs[1], "paddings")
    if len(paddings) == 4 and paddings[0] == [0, 0] and paddings[3] == [0, 0]:
        return tr.add(name, [tr.node(op.inputs[0])], **{"class": "ZeroPadding2D"}, padding=[paddings[1], paddings[2]])
    return tr.add(name, [tr.node(op.inputs[0])], op="pad", pad_width=paddings)
