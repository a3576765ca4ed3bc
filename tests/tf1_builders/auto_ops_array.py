"""Tiny TF1 graphs using the array, indexing and math ops of `architecture: auto` beyond `auto_ops.py`'s: stacks,
splits, numpy-style slices, shape arithmetic with `tf.shape`, fills, ranges, one-hot, where, gathers, top-k,
cumulative sums, clips, band parts, einsums, and GELU / l2_normalize written op by op (tests/test_auto_ops.py
runs each case against the TF1 ops at 1e-5).

    python tests/tf1_builders/auto_ops_array.py OUT

writes `OUT/<case>/` as `auto_ops.py` does (its helpers are used here).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from auto_ops import ROWS, Built, floats, weight
from common import cases_in, tf, v1, write_cases  # first: TF1 behaviour before TensorFlow is used


def case_stack_split(rng: np.random.RandomState) -> Built:
    """Pack (axis 1 and -1), Unpack (every output), Split (equal parts), SplitV (sizes with a -1)."""
    x = v1.placeholder(tf.float32, [None, 3, 4], name="x")
    u0, u1, u2 = tf.unstack(x, axis=1)
    s0, s1, s2 = tf.split(x, 3, axis=1)
    v0, v1_, v2 = tf.split(x, [1, -1, 2], axis=2)
    ops = {"stack": tf.stack([x, x * 2.0], axis=1), "stack_last": tf.stack([u0, u2], axis=-1), "u1": u1,
           "split": s0 + s2 - s1, "split_v": tf.concat([v2, v0, v1_], -1)}
    return {"x": x}, ops, {"x": floats(rng, 3, 4)}


def case_slices(rng: np.random.RandomState) -> Built:
    """StridedSlice with partial axes, strides, negative strides, ellipsis, new axes, shrink; Slice (-1 size)."""
    x = v1.placeholder(tf.float32, [None, 4, 5, 6], name="x")
    ops = {"partial": x[:, 1], "strided": x[:, ::2, 1:-1], "reversed": x[..., ::-1], "middle": x[:, 1:3, ..., 2],
           "new_axis": x[:, tf.newaxis, 2, :, 3:], "tail": x[:, -3:, :, 1::3], "backwards": x[:, 3:0:-2, -1],
           "slice": tf.slice(x, [0, 1, 0, 2], [-1, 2, 3, -1])}
    return {"x": x}, ops, {"x": floats(rng, 4, 5, 6)}


def case_variables_reshaped(rng: np.random.RandomState) -> Built:
    """Variables read by shape ops (BERT's position table through a Slice; a flat kernel through a Reshape, a
    transposed one) and by GatherNd (run-time indices): `ferry.Weight` nodes; ExpandDims with a one-element list
    axis (as BERT writes it)."""
    x = v1.placeholder(tf.float32, [None, 5, 6], name="x")
    index = v1.placeholder(tf.int32, [None, 2], name="index")
    with v1.variable_scope("position"):
        table = tf.slice(weight("table", [9, 6]), [0, 0], [5, -1])
    flat = tf.reshape(weight("flat", [30]), [5, 6])
    turned = tf.transpose(weight("turned", [6, 5]))
    ops = {"table": x + tf.reshape(table, [1, 5, 6]), "flat": x * flat, "turned": x - turned,
           "expand": tf.expand_dims(x, axis=[-1]) * 2.0, "scaled": x * weight("scale", [6]),
           "gather_nd": tf.gather_nd(weight("lookup", [3, 4, 2]), index)}
    shard = {"x": floats(rng, 5, 6), "index": np.stack([rng.randint(0, 3, ROWS), rng.randint(0, 4, ROWS)], 1)}
    return {"x": x, "index": index}, ops, {k: v.astype(np.int32) if k == "index" else v for k, v in shard.items()}


def case_shape_arithmetic(rng: np.random.RandomState) -> Built:
    """`tf.shape` feeding Reshape (a packed batch dim, beside a -1, a concatenated shape), Fill (`tf.ones` of a
    run-time batch), Tile (a run-time multiple, of a variable) and Range (`tf.range` of a static and of a run-time
    dim)."""
    x = v1.placeholder(tf.float32, [None, 5, 3], name="x")
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    cls = tf.tile(weight("cls", [1, 1, 3]), tf.stack([batch, 1, 1]))
    ops = {"packed": tf.reshape(x, tf.stack([batch, 15])), "flatten": tf.reshape(x, [batch, -1]),
           "concatenated": tf.reshape(x, tf.concat([tf.shape(x)[:1], [3, 5]], 0)),
           "ones": tf.ones(tf.stack([batch, 5, 1])) * x, "fill": tf.fill(tf.stack([batch, 2]), 2.5),
           "tile": tf.tile(x, [1, 2, 3]), "cls": tf.concat([cls, x], axis=1),
           "positions": x + tf.cast(tf.reshape(tf.range(length), [1, 5, 1]), tf.float32),
           "rows": tf.range(batch) * 3}
    return {"x": x}, ops, {"x": floats(rng, 5, 3)}


def case_one_hot_where(rng: np.random.RandomState) -> Built:
    """OneHot (ids out of range: all off; on/off values, another axis), Select (a vector condition picks rows),
    SelectV2 (tensors, a constant on either side), comparisons and logical ops."""
    ids = v1.placeholder(tf.int32, [None, 5], name="ids")
    x = v1.placeholder(tf.float32, [None, 5], name="x")
    rows = tf.reduce_mean(x, axis=1) > 0.5
    mask = tf.logical_or(tf.logical_and(x >= 0.2, x < 0.9), tf.logical_not(x <= 0.95))
    matches = tf.logical_and(tf.equal(ids, 2), tf.not_equal(tf.cast(x > 0.5, tf.int32), 0))
    ops = {"one_hot": tf.one_hot(ids, 4), "smoothed": tf.one_hot(ids, 4, on_value=0.9, off_value=0.05, axis=1),
           "select": v1.where(x > 0.5, x, -x), "rows": tf.raw_ops.Select(condition=rows, x=x, y=x * 10.0),
           "else_const": tf.where(x > 0.3, x, 0.0), "then_const": tf.where(0.3 < x, 1.0, x),
           "mask": tf.cast(mask, tf.float32), "matches": tf.cast(matches, tf.float32)}
    return {"ids": ids, "x": x}, ops, {"ids": rng.randint(-1, 5, (ROWS, 5)).astype(np.int32), "x": floats(rng, 5)}


def case_gather_top_k(rng: np.random.RandomState) -> Built:
    """GatherNd (constant indices into axes before one of run-time length) and TopKV2 (values and indices, with
    ties: the lower index first)."""
    x = v1.placeholder(tf.float32, [None, 4, 6], name="x")
    picked = tf.gather_nd(tf.transpose(x, [1, 2, 0]), [[1, 2], [3, 0], [0, 5]])  # [3, batch]
    values, indices = tf.math.top_k(x, k=3)
    ops = {"constant": tf.transpose(picked), "values": values, "indices": indices}
    return {"x": x}, ops, {"x": rng.randint(0, 4, (ROWS, 4, 6)).astype(np.float32)}


def case_cumsum_clip_band(rng: np.random.RandomState) -> Built:
    """Cumsum (plain, exclusive, reverse, both), ClipByValue (the raw op: constant and tensor bounds),
    MatrixBandPart."""
    x = v1.placeholder(tf.float32, [None, 4, 5], name="x")
    ops = {"cumsum": tf.math.cumsum(x, 1), "exclusive": tf.math.cumsum(x, 2, exclusive=True),
           "reverse": tf.math.cumsum(x, -1, reverse=True), "both": tf.math.cumsum(x, 1, exclusive=True, reverse=True),
           "clip": tf.raw_ops.ClipByValue(t=x, clip_value_min=0.2, clip_value_max=0.7),  # tf.clip_by_value:
           "clip_tensor": tf.raw_ops.ClipByValue(t=x, clip_value_min=x * 0.5, clip_value_max=0.6),  # max, min
           "lower": tf.linalg.band_part(x, 1, 0), "upper": tf.linalg.band_part(x, -1, 2),
           "diagonal": tf.linalg.band_part(x, 0, 0)}
    return {"x": x}, ops, {"x": floats(rng, 4, 5)}


def case_einsum(rng: np.random.RandomState) -> Built:
    """Einsum with variable kernels (EinsumDense: BERT's dense_layer_3d with reshaped kernel and bias, 2d with an
    AddV2 and a BiasAdd bias, the kernel first, no bias) and between tensors (attention's transposes and
    matmuls, an outer product, an index summed in one operand, one operand)."""
    x = v1.placeholder(tf.float32, [None, 5, 6], name="x")
    heads = tf.reshape(x, [-1, 5, 2, 3])
    with v1.variable_scope("dense3d"):
        w, b = tf.reshape(weight("kernel", [6, 8]), [6, 2, 4]), tf.reshape(weight("bias", [8]), [2, 4])
        dense3d = tf.einsum("abc,cde->abde", x, w) + b
    with v1.variable_scope("dense2d"):
        dense2d = tf.einsum("abc,cd->abd", x, weight("kernel", [6, 4])) + weight("bias", [4])
    with v1.variable_scope("bias_add"):
        bias_add = tf.nn.bias_add(tf.einsum("abc,cd->abd", x, weight("kernel", [6, 4])), weight("bias", [4]))
    with v1.variable_scope("kernel_first"):
        kernel_first = tf.einsum("cd,abc->abd", weight("kernel", [6, 3]), x)
    ops = {"dense3d": dense3d, "dense2d": dense2d, "bias_add": bias_add, "kernel_first": kernel_first,
           "scores": tf.einsum("BTNH,BFNH->BNFT", heads, heads * 2.0),
           "context": tf.einsum("BNFT,BTNH->BFNH", tf.einsum("BTNH,BFNH->BNFT", heads, heads), heads),
           "proj": tf.einsum("BFNH,NHD->BFD", heads, tf.reshape(tf.range(24, dtype=tf.float32) / 24.0, [2, 3, 4])),
           "outer": tf.einsum("bi,bj->bij", x[:, 0], x[:, 1]), "summed": tf.einsum("bij,bkj->bi", x, x[:, :2]),
           "transposed": tf.einsum("bij->bji", x), "reduced": tf.einsum("bij->bj", x)}
    return {"x": x}, ops, {"x": floats(rng, 5, 6)}


def case_fused_patterns(rng: np.random.RandomState) -> Built:
    """GELU op by op (erf form, both orders of the product; BERT's and HF's tanh forms, x^3 as a pow and as
    products) and l2_normalize (one axis, two axes, another epsilon): one `gelu` / `normalize` node each."""
    x = v1.placeholder(tf.float32, [None, 7], name="x")
    cube = v1.placeholder(tf.float32, [None, 3, 4], name="cube")
    h = x * 4.0 - 2.0
    cdf = 0.5 * (1.0 + tf.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * tf.pow(h, 3))))  # bert/modeling.py's gelu
    ops = {"erf": 0.5 * h * (1.0 + tf.math.erf(h / math.sqrt(2.0))),
           "erf_mul": h * (0.5 * (tf.math.erf(h * (1.0 / math.sqrt(2.0))) + 1.0)), "bert": h * cdf,
           "hf": 0.5 * h * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * (h * h * h)))),
           "l2": tf.nn.l2_normalize(h, axis=-1), "l2_axes": tf.math.l2_normalize(cube - 0.5, axis=[1, 2]),
           "l2_eps": tf.nn.l2_normalize(h * 1e-3, axis=1, epsilon=1e-4)}
    return {"x": x, "cube": cube}, ops, {"x": floats(rng, 7), "cube": floats(rng, 3, 4)}


def case_constant_operands(rng: np.random.RandomState) -> Built:
    """Elementwise ops with array constants (constant nodes) and a constant first operand of a division."""
    x = v1.placeholder(tf.float32, [None, 3], name="x")
    offsets = tf.constant([1.0, -2.0, 0.5])
    ops = {"add": x + offsets, "divide": offsets / (x + 1.0), "maximum": tf.maximum(x, [[0.2, 0.4, 0.6]]),
           "counts": tf.cast(tf.constant([1, 2, 3]), tf.float32) * x}
    return {"x": x}, ops, {"x": floats(rng, 3)}


if __name__ == "__main__":
    write_cases(cases_in(globals()), Path(sys.argv[1]))
