"""Image ops without weights: resizing (`ferry.TF1Resize`, every TF1 mode), depth <-> space rearrangements
(`keras.ops` reshapes and a transpose) and local response normalization (`ferry.LocalResponseNormalization`).
The convolutions with weights (`Conv2DBackpropInput`, `Conv3D`) are `nn.py`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ferry.facts import float32
from ferry.tf1.auto.registry import Unsupported, handles, layer_name
from ferry.tf1.auto.values import chain, dims_value

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


@handles("ResizeBilinear", "ResizeNearestNeighbor")
def resize(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`tf.compat.v1.image.resize_*` / `tf.image.resize` -> `ferry.TF1Resize` (the op's `align_corners` and
    `half_pixel_centers`; the input's height and width must be static, the size constant or shape arithmetic)."""
    static = op.outputs[0].shape.as_list()[1:3] if op.outputs[0].shape.rank == 4 else [None]
    size = static if None not in static else dims_value(tr, op.inputs[1])  # TF folds `tf.shape(x)[1:3] * 2`
    if not all(isinstance(n, int) for n in size):
        raise Unsupported(f"{op.type}(run-time size)", op.name)
    if None in op.inputs[0].shape.as_list()[1:3]:
        raise Unsupported(f"{op.type}(run-time input height or width)", op.name)
    interpolation = "bilinear" if op.type == "ResizeBilinear" else "nearest"
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], **{"class": "ferry.TF1Resize"}, size=size,
                  interpolation=interpolation, align_corners=bool(op.get_attr("align_corners")),
                  half_pixel_centers=bool(op.get_attr("half_pixel_centers")))


@handles("DepthToSpace", "SpaceToDepth")
def depth_space(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`tf.nn.depth_to_space` / `space_to_depth` (NHWC, static H, W, C) -> reshape, transpose, reshape."""
    if op.get_attr("data_format").decode() != "NHWC":
        raise Unsupported(f"{op.type}({op.get_attr('data_format').decode()})", op.name)
    _, h, w, c = op.inputs[0].shape.as_list()
    if None in (h, w, c):
        raise Unsupported(f"{op.type}(run-time height, width or depth)", op.name)
    b = op.get_attr("block_size")
    if op.type == "DepthToSpace":  # depth index (by * b + bx) * C' + c
        split, joined = [-1, h, w, b, b, c // (b * b)], [-1, h * b, w * b, c // (b * b)]
    else:
        split, joined = [-1, h // b, b, w // b, b, c], [-1, h // b, w // b, b * b * c]
    steps = [{"op": "reshape", "newshape": split}, {"op": "transpose", "axes": [0, 1, 3, 2, 4, 5]},
             {"op": "reshape", "newshape": joined}]
    return chain(tr, layer_name(op.name), tr.node(op.inputs[0]), steps)


@handles("LRN")
def lrn(tr: Translator, op: tf.Operation, tensor: tf.Tensor) -> str:
    """`tf.nn.local_response_normalization` -> `ferry.LocalResponseNormalization` (float32)."""
    if op.inputs[0].dtype != tf.float32:
        raise Unsupported(f"LRN({op.inputs[0].dtype.name})", op.name)
    return tr.add(layer_name(op.name), [tr.node(op.inputs[0])], **{"class": "ferry.LocalResponseNormalization"},
                  depth_radius=int(op.get_attr("depth_radius")), bias=float32(op.get_attr("bias")),
                  alpha=float32(op.get_attr("alpha")), beta=float32(op.get_attr("beta")))
