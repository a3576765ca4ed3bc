"""Layers with weights, and the other `tf.nn` layers: convolutions and dense (`linear`, also fused with
a `BiasAdd` or written as a tensordot: see `fusions.py`), batch norm, embeddings, pooling, padding."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from ferry.facts import float32
from ferry.tf1.auto.registry import Unsupported, handles, layer_name

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator

LINEAR = frozenset({"Conv2D", "DepthwiseConv2dNative", "MatMul"})


def linear(tr: Translator, op: tf.Operation, bias: tf.Operation | None, x: tf.Tensor | None = None) -> str:
    """Conv2D / DepthwiseConv2dNative / MatMul (+ BiasAdd) with variable weights -> one layer
    (applied to `x` instead of the op's own input for a tensordot)."""
    kernel_var = tr.variable(op.inputs[1])
    bias_var = tr.variable(bias.inputs[1]) if bias is not None else None
    if bias is not None and not bias_var:
        raise Unsupported("BiasAdd", bias.name)
    x = tr.node(op.inputs[0] if x is None else x)  # first: the name must be unique among nodes so far
    name = tr.unique(layer_name(kernel_var.rsplit("/", 1)[0]), kernel_var)
    shape = op.inputs[1].shape.as_list()
    if op.type == "MatMul":
        if op.get_attr("transpose_a"):
            raise Unsupported("MatMul(transpose_a)", op.name)
        units = shape[0] if op.get_attr("transpose_b") else shape[1]
        transposed = {"transpose": {"perm": [1, 0]}} if op.get_attr("transpose_b") else None
        tr.bind(kernel_var, f"{name}/kernel", transposed)
        config = {"class": "Dense", "units": units}
    else:
        if op.get_attr("data_format").decode() != "NHWC":
            raise Unsupported(f"{op.type}(NCHW)", op.name)
        padding = op.get_attr("padding").decode()
        if padding not in ("SAME", "VALID"):
            raise Unsupported(f"{op.type}(padding={padding})", op.name)
        strides, dilations = op.get_attr("strides"), op.get_attr("dilations")
        config = {"kernel_size": shape[:2], "strides": strides[1:3], "padding": padding.lower(),
                  "dilation_rate": dilations[1:3]}
        if op.type == "Conv2D":
            config = {"class": "Conv2D", "filters": shape[3], **config}
        else:
            config = {"class": "DepthwiseConv2D", "depth_multiplier": shape[3], **config}
        tr.bind(kernel_var, f"{name}/kernel")  # Keras 3 names the depthwise kernel `kernel` too
    if bias_var:
        tr.bind(bias_var, f"{name}/bias")
    return tr.add(name, [x], **config, use_bias=bool(bias_var))


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
    """FusedBatchNorm* at inference -> BatchNormalization (epsilon from the op; no gamma/beta allowed)."""
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
    return tr.add(name, [tr.node(x)], **{"class": "BatchNormalization"},
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
    """MaxPool / AvgPool (NHWC) -> MaxPooling2D / AveragePooling2D."""
    if op.get_attr("data_format").decode() != "NHWC":
        raise Unsupported(f"{op.type}(NCHW)", op.name)
    cls = "MaxPooling2D" if op.type == "MaxPool" else "AveragePooling2D"
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], **{"class": cls},
                  pool_size=op.get_attr("ksize")[1:3], strides=op.get_attr("strides")[1:3],
                  padding=op.get_attr("padding").decode().lower())


@handles("Pad")
def pad(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """Zero padding of H and W -> ZeroPadding2D; any other constant padding -> `keras.ops.pad`."""
    name = layer_name(op.name)
    paddings = tr.const(op.inputs[1], "paddings")
    if len(paddings) == 4 and paddings[0] == [0, 0] and paddings[3] == [0, 0]:
        return tr.add(name, [tr.node(op.inputs[0])], **{"class": "ZeroPadding2D"}, padding=[paddings[1], paddings[2]])
    return tr.add(name, [tr.node(op.inputs[0])], op="pad", pad_width=paddings)
