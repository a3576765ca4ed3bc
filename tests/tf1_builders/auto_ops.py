"""Tiny TF1 graphs that, with the other `auto_ops*.py` builders, use every op type `architecture: auto`
translates: each case is the numerical test of a few op handlers against the TF1 ops themselves
(tests/test_auto_ops.py).

    python tests/tf1_builders/auto_ops.py OUT

writes `OUT/<case>/`: `model.ckpt.*` (variables at random initial values: a translation needs no
training), `shards/shard-000.npz`, `manifest.json` (inputs, outputs: serving name -> tensor). A case is a
function `case_<name>(rng)` building its graph in the default graph and returning (inputs, outputs,
shard); every output is compared. Adding an op: use it in a case (a new one, or one of its family).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from common import cases_in, tf, v1, write_cases  # first: TF1 behaviour before TensorFlow is used

ROWS = 8
Tensors = dict[str, tf.Tensor]
Built = tuple[Tensors, Tensors, dict[str, np.ndarray]]


def weight(name: str, shape: list[int], low: float = -1.0, high: float = 1.0) -> tf.Tensor:
    return v1.get_variable(name, shape, initializer=v1.random_uniform_initializer(low, high))


def floats(rng: np.random.RandomState, *shape: int) -> np.ndarray:
    return rng.rand(ROWS, *shape).astype(np.float32)


def case_conv(rng: np.random.RandomState) -> Built:
    """Conv2D (+ BiasAdd, strides, SAME), Conv2D without bias (dilated, VALID), DepthwiseConv2dNative + BiasAdd."""
    x = v1.placeholder(tf.float32, [None, 9, 9, 3], name="images")
    with v1.variable_scope("conv1"):
        h = tf.nn.bias_add(tf.nn.conv2d(x, weight("kernel", [3, 3, 3, 4]), [1, 2, 2, 1], "SAME"), weight("bias", [4]))
    with v1.variable_scope("conv2"):
        h = tf.nn.conv2d(h, weight("kernel", [2, 2, 4, 4]), [1, 1, 1, 1], "VALID", dilations=[1, 2, 2, 1])
    with v1.variable_scope("depthwise"):
        h = tf.nn.depthwise_conv2d(h, weight("kernel", [3, 3, 4, 2]), [1, 1, 1, 1], "SAME")
        h = tf.nn.bias_add(h, weight("bias", [8]))
    return {"images": x}, {"y": h}, {"images": floats(rng, 9, 9, 3)}


def case_dense(rng: np.random.RandomState) -> Built:
    """MatMul (+ BiasAdd), MatMul(transpose_b) without bias, and `tf.layers.dense` on rank 3 (tensordot)."""
    x = v1.placeholder(tf.float32, [None, 6], name="x")
    seq = v1.placeholder(tf.float32, [None, 5, 6], name="seq")
    with v1.variable_scope("fc1"):
        h = tf.nn.bias_add(tf.matmul(x, weight("kernel", [6, 4])), weight("bias", [4]))
    with v1.variable_scope("fc2"):
        h = tf.matmul(h, weight("kernel", [3, 4]), transpose_b=True)
    per_step = v1.layers.dense(seq, 4, bias_initializer=v1.random_uniform_initializer(-1, 1), name="per_step")
    return {"x": x, "seq": seq}, {"y": h, "per_step": per_step}, {"x": floats(rng, 6), "seq": floats(rng, 5, 6)}


def case_batch_norm(rng: np.random.RandomState) -> Built:
    """FusedBatchNorm (gamma, beta), FusedBatchNormV2 (no gamma), FusedBatchNormV3 (`tf.layers`)."""
    x = v1.placeholder(tf.float32, [None, 4, 4, 3], name="x")

    def stats(scope: str) -> tuple[tf.Tensor, tf.Tensor]:
        with v1.variable_scope(scope):
            return weight("moving_mean", [3]), weight("moving_variance", [3], 0.5, 1.5)

    with v1.variable_scope("bn1"):
        gamma, beta = weight("gamma", [3]), weight("beta", [3])
    mean, variance = stats("bn1")
    h = tf.raw_ops.FusedBatchNorm(x=x, scale=gamma, offset=beta, mean=mean, variance=variance, epsilon=1e-3,
                                  is_training=False)[0]
    with v1.variable_scope("bn2"):
        beta = weight("beta", [3])
    mean, variance = stats("bn2")
    h = tf.raw_ops.FusedBatchNormV2(x=h, scale=tf.ones([3]), offset=beta, mean=mean, variance=variance,
                                    epsilon=1e-5, is_training=False)[0]
    h = v1.layers.batch_normalization(h, training=False, name="bn3", epsilon=1e-4,
                                      moving_variance_initializer=v1.random_uniform_initializer(0.5, 1.5),
                                      moving_mean_initializer=v1.random_uniform_initializer(-1, 1),
                                      gamma_initializer=v1.random_uniform_initializer(-1, 1),
                                      beta_initializer=v1.random_uniform_initializer(-1, 1))
    return {"x": x}, {"y": h}, {"x": floats(rng, 4, 4, 3)}


def case_pool_pad(rng: np.random.RandomState) -> Built:
    """MaxPool (VALID), AvgPool (SAME, stride 1), Pad of H/W (ZeroPadding2D) and of channels."""
    x = v1.placeholder(tf.float32, [None, 8, 8, 2], name="x")
    outputs = {"max": tf.nn.max_pool2d(x, 2, 2, "VALID"), "avg": tf.nn.avg_pool2d(x, 3, 1, "SAME"),
               "pad_hw": tf.pad(x, [[0, 0], [1, 2], [2, 1], [0, 0]]),
               "pad_c": tf.pad(x, [[0, 0], [0, 0], [0, 0], [1, 1]])}
    return {"x": x}, outputs, {"x": floats(rng, 8, 8, 2)}


def case_embedding(rng: np.random.RandomState) -> Built:
    """GatherV2 (`tf.gather`), Gather (the old op), ResourceGather (a resource variable); Cast of the ids."""
    ids = v1.placeholder(tf.int32, [None, 5], name="ids")
    table, old_table = weight("table", [10, 3]), weight("old_table", [10, 4])
    resource = v1.get_variable("resource_table", [10, 3], use_resource=True)
    outputs = {"gather_v2": tf.gather(table, ids), "gather": tf.raw_ops.Gather(params=old_table, indices=ids),
               "resource_gather": tf.gather(resource, ids), "cast": tf.cast(ids, tf.float32)}
    return {"ids": ids}, outputs, {"ids": rng.randint(0, 10, (ROWS, 5)).astype(np.int32)}


def case_activations(rng: np.random.RandomState) -> Built:
    """Every unary op, LeakyRelu and Softmax (positive inputs where the op needs them)."""
    x = v1.placeholder(tf.float32, [None, 7], name="x")
    centred, positive = x - 0.5, x + 0.5
    ops = {"relu": tf.nn.relu(centred), "relu6": tf.nn.relu6(x * 10.0 - 2.0), "elu": tf.nn.elu(centred),
           "selu": tf.nn.selu(centred), "sigmoid": tf.sigmoid(centred), "tanh": tf.tanh(centred),
           "softplus": tf.nn.softplus(centred), "exp": tf.exp(x), "log": tf.math.log(positive), "neg": -x,
           "sqrt": tf.sqrt(positive), "rsqrt": tf.math.rsqrt(positive), "square": tf.square(centred),
           "abs": tf.abs(centred), "erf": tf.math.erf(centred), "reciprocal": tf.math.reciprocal(positive),
           "floor": tf.floor(x * 4.0), "leaky_relu": tf.nn.leaky_relu(centred, alpha=0.1),
           "softmax": tf.nn.softmax(x * 3.0)}
    return {"x": x}, ops, {"x": floats(rng, 7)}


def case_binary(rng: np.random.RandomState) -> Built:
    """Two tensors, a constant on either side, and variables used directly (`ferry.Weight` nodes)."""
    a = v1.placeholder(tf.float32, [None, 6], name="a")
    b = v1.placeholder(tf.float32, [None, 6], name="b")
    with v1.variable_scope("norm"):
        gamma, beta = weight("gamma", [6]), weight("beta", [6])
    ops = {"add": tf.raw_ops.Add(x=a, y=b), "add_v2": a + b, "sub": a - b, "mul": a * b, "real_div": a / (b + 1.0),
           "maximum": tf.maximum(a, b), "minimum": tf.minimum(a, b), "pow": tf.pow(a + 0.5, b),
           "squared_difference": tf.math.squared_difference(a, b), "const_minus": 2.0 - a,
           "const_times": tf.raw_ops.Mul(x=tf.constant(3.0), y=a), "const_max": tf.maximum(0.3, a),
           "weights": a * gamma + beta, "weight_again": b * gamma}
    return {"a": a, "b": b}, ops, {"a": floats(rng, 6), "b": floats(rng, 6)}


def case_batch_matmul(rng: np.random.RandomState) -> Built:
    """BatchMatMulV2 (`tf.matmul` on rank 3, adj_y) and BatchMatMul (the old op, adj_x)."""
    a = v1.placeholder(tf.float32, [None, 3, 4], name="a")
    b = v1.placeholder(tf.float32, [None, 5, 4], name="b")
    ops = {"v2": tf.matmul(a, b, transpose_b=True), "v1": tf.raw_ops.BatchMatMul(x=a, y=a, adj_x=True)}
    return {"a": a, "b": b}, ops, {"a": floats(rng, 3, 4), "b": floats(rng, 5, 4)}


def case_reduce(rng: np.random.RandomState) -> Built:
    """Mean, Sum, Max, Min, Prod over one or several axes, with and without keepdims."""
    x = v1.placeholder(tf.float32, [None, 3, 4], name="x")
    ops = {"mean": tf.reduce_mean(x, 1, keepdims=True), "sum": tf.reduce_sum(x, [1, 2]),
           "max": tf.reduce_max(x, -1), "min": tf.reduce_min(x, 2, keepdims=True), "prod": tf.reduce_prod(x + 0.5, 1)}
    return {"x": x}, ops, {"x": floats(rng, 3, 4)}


def case_argmax(rng: np.random.RandomState) -> Built:
    """ArgMax (int64 indices, as a classifier's `classes`) and ArgMin (int32, negative axis)."""
    x = v1.placeholder(tf.float32, [None, 4, 5], name="x")
    ops = {"argmax": tf.argmax(x, axis=1), "argmin": tf.argmin(x, axis=-1, output_type=tf.int32)}
    return {"x": x}, ops, {"x": floats(rng, 4, 5)}


def case_shapes(rng: np.random.RandomState) -> Built:
    """Reshape, Squeeze, ExpandDims, Transpose, ConcatV2, StridedSlice (ranges, shrink, negative index; `auto`
    takes slices that name every axis)."""
    x = v1.placeholder(tf.float32, [None, 2, 3, 4], name="x")
    ops = {"reshape": tf.reshape(x, [-1, 24]), "squeeze": tf.squeeze(x[:, :1, :, :], axis=1),
           "expand_dims": tf.expand_dims(x, 1), "transpose": tf.transpose(x, [0, 3, 1, 2]),
           "concat": tf.concat([x, x * 2.0], -1), "slice": x[:, 1, :, 1:3], "last": x[:, :, -1, :]}
    return {"x": x}, ops, {"x": floats(rng, 2, 3, 4)}


def case_lstm(rng: np.random.RandomState) -> Built:
    """dynamic_rnn with an LSTMCell (forget bias 0.5): the TensorArrayGatherV3 + Transpose of its outputs."""
    x = v1.placeholder(tf.float32, [None, 6, 3], name="x")
    outputs, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.LSTMCell(5, forget_bias=0.5), x, dtype=tf.float32)
    return {"x": x}, {"y": outputs}, {"x": floats(rng, 6, 3)}


def case_gru(rng: np.random.RandomState) -> Built:
    """dynamic_rnn with a GRUCell."""
    x = v1.placeholder(tf.float32, [None, 6, 3], name="x")
    outputs, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.GRUCell(5), x, dtype=tf.float32)
    return {"x": x}, {"y": outputs}, {"x": floats(rng, 6, 3)}


if __name__ == "__main__":
    write_cases(cases_in(globals()), Path(sys.argv[1]))
