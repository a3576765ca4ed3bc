"""Tiny TF1 graphs using the vision ops of `architecture: auto`, written by TF1's own APIs
(`tf.compat.v1.layers`, `tf.compat.v1.nn`, `tf.compat.v1.image`): transposed and 3-D convolutions, resizing
in every mode, depth <-> space, LRN, explicit padding, NCHW ops TF has CPU kernels for, and a small
`tf.compat.v1.layers` encoder-decoder (tests/test_auto_ops.py runs each case against the TF1 ops at 1e-5).

    python tests/tf1_builders/auto_ops_vision.py OUT

writes `OUT/<case>/` as `auto_ops.py` does (its helpers are used here).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from auto_ops import Built, floats, weight
from common import cases_in, tf, v1, write_cases  # first: TF1 behaviour before TensorFlow is used

INIT = {"kernel_initializer": v1.random_uniform_initializer(-1, 1),
        "bias_initializer": v1.random_uniform_initializer(-1, 1)}


def case_conv_transpose(rng: np.random.RandomState) -> Built:
    """Conv2DBackpropInput: `tf.layers.conv2d_transpose` SAME and VALID at stride 2 (+ BiasAdd), and
    `tf.nn.conv2d_transpose` without bias (its output shape packed from `tf.shape`, stride 3, VALID)."""
    x = v1.placeholder(tf.float32, [None, 5, 6, 3], name="x")
    same = v1.layers.conv2d_transpose(x, 4, 3, strides=2, padding="same", name="up_same", **INIT)
    valid = v1.layers.conv2d_transpose(x, 2, 3, strides=2, padding="valid", name="up_valid", **INIT)
    with v1.variable_scope("raw"):
        raw = tf.nn.conv2d_transpose(x[:, :, :, :2], weight("kernel", [4, 4, 3, 2]),
                                     tf.stack([tf.shape(x)[0], 16, 19, 3]), [1, 3, 3, 1], "VALID")
    return {"x": x}, {"same": same, "valid": valid, "raw": raw}, {"x": floats(rng, 5, 6, 3)}


def case_conv3d(rng: np.random.RandomState) -> Built:
    """Conv3D: `tf.layers.conv3d` (SAME, strides 2 and 1 and 2, + BiasAdd) and `tf.nn.conv3d` (VALID, no bias)."""
    x = v1.placeholder(tf.float32, [None, 4, 6, 6, 2], name="x")
    h = v1.layers.conv3d(x, 3, 3, strides=(2, 1, 2), padding="same", name="conv3d", **INIT)
    with v1.variable_scope("raw3d"):
        y = tf.nn.conv3d(h, weight("kernel", [2, 2, 2, 3, 4]), [1, 1, 1, 1, 1], "VALID")
    return {"x": x}, {"y": y}, {"x": floats(rng, 4, 6, 6, 2)}


def case_resize(rng: np.random.RandomState) -> Built:
    """ResizeBilinear and ResizeNearestNeighbor in TF1's three modes (legacy default, align_corners,
    half_pixel_centers as `tf.image.resize` writes them), up and down, at ratios that are no integer."""
    x = v1.placeholder(tf.float32, [None, 7, 9, 2], name="x")
    image = v1.image
    ops = {}
    for size in ([12, 16], [4, 5]):
        tag = f"{size[0]}x{size[1]}"
        ops |= {f"bilinear_{tag}": image.resize_bilinear(x, size),
                f"bilinear_corners_{tag}": image.resize_bilinear(x, size, align_corners=True),
                f"bilinear_half_{tag}": image.resize_bilinear(x, size, half_pixel_centers=True),
                f"nearest_{tag}": image.resize_nearest_neighbor(x, size),
                f"nearest_corners_{tag}": image.resize_nearest_neighbor(x, size, align_corners=True),
                f"nearest_half_{tag}": image.resize_nearest_neighbor(x, size, half_pixel_centers=True)}
    ops["v2_bilinear"] = tf.image.resize(x, [10, 10])  # half_pixel_centers=True
    ops["v2_nearest"] = tf.image.resize(x, [3, 13], method="nearest")
    ops["doubled"] = image.resize_bilinear(x, tf.shape(x)[1:3] * 2)  # the size from shape arithmetic
    return {"x": x}, ops, {"x": floats(rng, 7, 9, 2) * 4.0 - 2.0}


def case_depth_space(rng: np.random.RandomState) -> Built:
    """DepthToSpace and SpaceToDepth (block 2 and 3)."""
    x = v1.placeholder(tf.float32, [None, 6, 6, 8], name="x")
    ops = {"to_space": tf.nn.depth_to_space(x, 2), "to_depth": v1.space_to_depth(x, 3),
           "round_trip": tf.nn.depth_to_space(tf.nn.space_to_depth(x, 2), 2)}
    return {"x": x}, ops, {"x": floats(rng, 6, 6, 8)}


def case_lrn(rng: np.random.RandomState) -> Built:
    """LRN: `tf.nn.local_response_normalization` with its defaults and with AlexNet's settings."""
    x = v1.placeholder(tf.float32, [None, 4, 4, 12], name="x")
    ops = {"default": tf.nn.local_response_normalization(x),
           "alexnet": tf.nn.lrn(x * 10.0, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75),
           "beta_one": tf.nn.lrn(x, depth_radius=3, bias=0.5, alpha=0.3, beta=1.0)}
    return {"x": x}, ops, {"x": floats(rng, 4, 4, 12)}


def case_explicit_pad(rng: np.random.RandomState) -> Built:
    """Conv2D with explicit asymmetric padding (`padding=[[0, 0], [1, 2], [0, 1], [0, 0]]`), and an
    asymmetric `tf.pad` before a VALID strided conv (what tf_slim's `conv2d_same` writes)."""
    x = v1.placeholder(tf.float32, [None, 9, 8, 3], name="x")
    with v1.variable_scope("explicit"):
        a = tf.nn.conv2d(x, weight("kernel", [3, 3, 3, 4]), [1, 2, 1, 1], [[0, 0], [1, 2], [0, 1], [0, 0]])
    with v1.variable_scope("padded"):
        b = tf.nn.conv2d(tf.pad(x, [[0, 0], [2, 1], [1, 3], [0, 0]]), weight("kernel", [3, 3, 3, 4]), [1, 2, 2, 1],
                         "VALID")
    return {"x": x}, {"explicit": a, "padded": b}, {"x": floats(rng, 9, 8, 3)}


def case_nchw_cpu(rng: np.random.RandomState) -> Built:
    """The NCHW ops TF runs on CPU: BiasAdd(NCHW) on no layer, FusedBatchNormV3(NCHW) (`tf.layers`, axis 1)."""
    x = v1.placeholder(tf.float32, [None, 3, 5, 5], name="x")
    with v1.variable_scope("bias"):
        h = tf.nn.bias_add(x * 2.0, weight("bias", [3]), data_format="NCHW")
    y = v1.layers.batch_normalization(h, axis=1, training=False, name="bn", fused=True,
                                      moving_variance_initializer=v1.random_uniform_initializer(0.5, 1.5),
                                      moving_mean_initializer=v1.random_uniform_initializer(-1, 1),
                                      gamma_initializer=v1.random_uniform_initializer(-1, 1),
                                      beta_initializer=v1.random_uniform_initializer(-1, 1))
    return {"x": x}, {"bias": h, "bn": y}, {"x": floats(rng, 3, 5, 5)}


def case_encoder_decoder(rng: np.random.RandomState) -> Built:
    """A `tf.compat.v1.layers` encoder-decoder: conv2d (stride 2) -> conv2d_transpose (stride 2) ->
    resize_bilinear back to the input size (align_corners) -> a 1x1 conv head."""
    x = v1.placeholder(tf.float32, [None, 12, 12, 3], name="images")
    h = v1.layers.conv2d(x, 8, 3, strides=2, padding="same", activation=tf.nn.relu, name="encoder", **INIT)
    h = v1.layers.conv2d_transpose(h, 4, 3, strides=2, padding="same", activation=tf.nn.relu, name="decoder", **INIT)
    h = v1.image.resize_bilinear(h, [16, 16], align_corners=True)
    y = v1.layers.conv2d(h, 2, 1, name="head", **INIT)
    return {"images": x}, {"y": y}, {"images": floats(rng, 12, 12, 3)}


if __name__ == "__main__":
    write_cases(cases_in(globals()), Path(sys.argv[1]))
