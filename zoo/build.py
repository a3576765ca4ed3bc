"""Build the example zoo: real TF1-era models written with real TF1 APIs.

Each model gets its own folder under ``--out`` (default: this folder)::

    <name>/model.ckpt.meta                     meta graph (reference variables, VariableV2)
    <name>/model.ckpt.index                    name-based checkpoint, optimizer state included
    <name>/model.ckpt.data-00000-of-00001
    <name>/shards/shard-000.npz ... 003.npz    inputs keyed by placeholder name (float32,
                                               uint8 images, int32 tokens)
    <name>/manifest.json                       inputs, outputs, tf_version (written last)

(``example_dnn``, which takes serialized tf.Examples, has TFRecord files of them instead:
``shard-000.tfrecord`` ... ``002``, and ``shard-003.tfrecord.gz``, GZIP-compressed), and, for two
models, the same kind of data in other formats (``EXTRA_DATA``; written beside a model
already built too, so an older zoo gains them without a rebuild)::

    text_lstm/tfrecords/tokens.tfrecord        96 tf.Examples: `token_ids`, var-length int64 (8..20)
    mnist_cnn/foreign/batch-000.npz, 001.npz   images under a foreign key, `images__0`

Usage: ``python zoo/build.py [--out DIR] [--only NAME ...] [--force]``.

Runs in its own process: it needs ``tf_keras`` for ``tf.compat.v1.layers`` and calls
``disable_v2_behavior()``, neither of which may leak into ferry itself (see docs/design.md).
To add a model, write one ``build_<name>`` function and register it in ``MODELS``.
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.layers needs tf_keras on TF >= 2.16
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, TypeVar  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

# The deprecation notices of tf.compat.v1 are expected here; keep the progress lines readable.
tf.get_logger().setLevel("ERROR")
warnings.filterwarnings("ignore", message=r"`tf\.layers\.\w+` is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r"`tf\.nn\.rnn_cell\.\w+` is deprecated",
                        category=UserWarning)

# TF1-era graphs: reference variables (VariableV2 + .../read) and v1 control flow.
tf.compat.v1.disable_v2_behavior()

v1 = tf.compat.v1
SEED = 1234
N_SHARDS = 4
CKPT_NAME = "model.ckpt"

T = TypeVar("T")
Feed = dict  # feed_dict: placeholder tensor -> numpy array


@dataclass
class Built:
    """What a model builder returns; the graph it built is the default graph."""

    inputs: dict[str, tf.Tensor]  # serving name -> the tensor fed (a placeholder, or an iterator's output)
    outputs: dict[str, tf.Tensor]  # serving name -> tensor
    train_op: tf.Operation
    train_feeds: list[Feed]  # one feed_dict per training step
    shard: Callable[[np.random.RandomState], dict[str, np.ndarray]]  # one verification shard
    # How the trained model is saved (default: a `.meta` graph and a name-based checkpoint, `model.ckpt`);
    # returns what the manifest records about the artifact.
    save: Callable[[v1.Session, Path, Built], dict] | None = None
    # The shards are TFRecord files of the serialized tf.Examples `shard` returns (the model's one input, a
    # string placeholder), not `.npz`; the last one GZIP-compressed (`.tfrecord.gz`).
    tfrecord_shards: bool = False


def build_linear(rng: np.random.RandomState) -> Built:
    """y = 3x + 2 with one dense unit; Momentum optimizer, 20 steps."""
    x = v1.placeholder(tf.float32, [None, 1], name="x")
    target = v1.placeholder(tf.float32, [None, 1], name="target")
    y = tf.identity(v1.layers.dense(x, 1), name="y")
    loss = v1.losses.mean_squared_error(target, y)
    train_op = v1.train.MomentumOptimizer(0.01, 0.9).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = []
    for _ in range(20):
        xs = rng.normal(size=(32, 1)).astype(np.float32)
        ys = (3.0 * xs + 2.0 + 0.1 * rng.normal(size=xs.shape)).astype(np.float32)
        feeds.append({x: xs, target: ys})
    return Built(
        inputs={"x": x},
        outputs={"y": y},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"x": r.normal(size=(64, 1)).astype(np.float32)},
    )


def build_mlp(rng: np.random.RandomState) -> Built:
    """784-64-128-10 MLP with softmax; Adam, 10 steps on random data."""
    x = v1.placeholder(tf.float32, [None, 784], name="x")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.dense(x, 64, activation=tf.nn.relu)
    h = v1.layers.dense(h, 128, activation=tf.nn.relu)
    logits = v1.layers.dense(h, 10)
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {x: rng.uniform(size=(32, 784)).astype(np.float32), labels: rng.randint(0, 10, size=32)}
        for _ in range(10)
    ]
    return Built(
        inputs={"x": x},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"x": r.uniform(size=(64, 784)).astype(np.float32)},
    )


def build_mnist_cnn(rng: np.random.RandomState) -> Built:
    """Two conv/max-pool blocks, flatten, dense 10, softmax; Adam, 5 steps."""
    images = v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.conv2d(images, 32, 3, activation=tf.nn.relu)
    h = v1.layers.max_pooling2d(h, pool_size=2, strides=2)
    h = v1.layers.conv2d(h, 64, 3, activation=tf.nn.relu)
    h = v1.layers.max_pooling2d(h, pool_size=2, strides=2)
    h = v1.layers.flatten(h)
    logits = v1.layers.dense(h, 10)
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {
            images: rng.uniform(size=(16, 28, 28, 1)).astype(np.float32),
            labels: rng.randint(0, 10, size=16),
        }
        for _ in range(5)
    ]
    return Built(
        inputs={"images": images},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"images": r.uniform(size=(32, 28, 28, 1)).astype(np.float32)},
    )


def _conv_bn(h, filters: int, is_training, *, strides: int = 1, scale: bool = True,
             conv: str = "conv", bn: str = "bn"):
    """conv (no bias, 'same') -> batch norm in the current variable scope; no activation."""
    h = v1.layers.conv2d(h, filters, 3, strides=strides, padding="same", use_bias=False, name=conv)
    return v1.layers.batch_normalization(
        h, training=is_training, momentum=0.9, epsilon=1e-5, scale=scale, name=bn
    )


def build_resnet_bn(rng: np.random.RandomState) -> Built:
    """Small ResNet on uint8 images: BN stem, identity block, downsampling block; Adam, 5 steps.

    ``is_training`` is a placeholder_with_default(False) switch; training feeds True, and the
    train op runs the UPDATE_OPS so moving mean/variance move away from their initial values.
    ``block2/bn2`` has ``scale=False`` (no gamma); its shortcut is a 1x1 stride-2 conv with bias.
    """
    images = v1.placeholder(tf.uint8, [None, 32, 32, 3], name="images")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    is_training = v1.placeholder_with_default(False, [], name="is_training")
    x = tf.cast(images, tf.float32) / 255.0
    with v1.variable_scope("stem"):
        h = tf.nn.relu(_conv_bn(x, 16, is_training))
    with v1.variable_scope("block1"):  # identity block
        r = tf.nn.relu(_conv_bn(h, 16, is_training, conv="conv1", bn="bn1"))
        r = _conv_bn(r, 16, is_training, conv="conv2", bn="bn2")
        h = tf.nn.relu(h + r)
    with v1.variable_scope("block2"):  # downsampling block
        r = tf.nn.relu(_conv_bn(h, 32, is_training, strides=2, conv="conv1", bn="bn1"))
        r = _conv_bn(r, 32, is_training, scale=False, conv="conv2", bn="bn2")
        shortcut = v1.layers.conv2d(h, 32, 1, strides=2, padding="same", name="shortcut")
        h = tf.nn.relu(shortcut + r)
    h = tf.reduce_mean(h, axis=[1, 2])
    logits = v1.layers.dense(h, 10, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = v1.train.AdamOptimizer(1e-3).minimize(
            loss, global_step=v1.train.get_or_create_global_step()
        )
    feeds = [
        {
            images: rng.randint(0, 256, size=(16, 32, 32, 3)).astype(np.uint8),
            labels: rng.randint(0, 10, size=16),
            is_training: True,
        }
        for _ in range(5)
    ]
    return Built(
        inputs={"images": images},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"images": r.randint(0, 256, size=(32, 32, 32, 3)).astype(np.uint8)},
    )


def build_text_lstm(rng: np.random.RandomState) -> Built:
    """Embedding -> TF1 LSTMCell(32, forget_bias=1.0) via dynamic_rnn -> last step -> dense 2.

    TF1 LSTMCell: one ``rnn/lstm_cell/kernel`` [16 + 32, 128], gate order i, j, f, o, and the
    forget bias added at run time inside the while loop. Adam, 5 steps.
    """
    tokens = v1.placeholder(tf.int32, [None, 20], name="tokens")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    embedding = v1.get_variable("embedding", [100, 16])
    emb = tf.nn.embedding_lookup(embedding, tokens)
    cell = v1.nn.rnn_cell.LSTMCell(32, forget_bias=1.0)
    outputs, _ = v1.nn.dynamic_rnn(cell, emb, dtype=tf.float32)
    logits = v1.layers.dense(outputs[:, -1, :], 2, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-2).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {tokens: rng.randint(0, 100, size=(16, 20)).astype(np.int32),
         labels: rng.randint(0, 2, size=16)}
        for _ in range(5)
    ]
    return Built(
        inputs={"tokens": tokens},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"tokens": r.randint(0, 100, size=(32, 20)).astype(np.int32)},
    )


def build_gru_seq(rng: np.random.RandomState) -> Built:
    """TF1 GRUCell(16) via dynamic_rnn, dense 4 on every time step; Momentum on MSE, 5 steps.

    Keys ``rnn/gru_cell/gates/{kernel,bias}`` (r, u) and ``rnn/gru_cell/candidate/{kernel,bias}``;
    the head is ``tf.layers.dense`` on the 3-D outputs (a tensordot), keys ``head/{kernel,bias}``.
    """
    features = v1.placeholder(tf.float32, [None, 12, 8], name="features")
    targets = v1.placeholder(tf.float32, [None, 12, 4], name="targets")
    cell = v1.nn.rnn_cell.GRUCell(16)
    outputs, _ = v1.nn.dynamic_rnn(cell, features, dtype=tf.float32)
    scores = tf.identity(v1.layers.dense(outputs, 4, name="head"), name="scores")
    loss = v1.losses.mean_squared_error(targets, scores)
    train_op = v1.train.MomentumOptimizer(0.05, 0.9).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {features: rng.normal(size=(16, 12, 8)).astype(np.float32),
         targets: rng.normal(size=(16, 12, 4)).astype(np.float32)}
        for _ in range(5)
    ]
    return Built(
        inputs={"features": features},
        outputs={"scores": scores},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"features": r.normal(size=(32, 12, 8)).astype(np.float32)},
    )


HIDDEN, HEADS, HEAD_SIZE, SEQ_LEN = 32, 2, 16, 16


def _layer_norm(x: tf.Tensor) -> tf.Tensor:
    """Layer norm written by hand in the current variable scope: gamma, beta, epsilon 1e-6."""
    gamma = v1.get_variable("gamma", [HIDDEN], initializer=v1.ones_initializer())
    beta = v1.get_variable("beta", [HIDDEN], initializer=v1.zeros_initializer())
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return gamma * (x - mean) * tf.math.rsqrt(var + 1e-6) + beta


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    """GELU, tanh approximation as in the original BERT code."""
    return 0.5 * x * (1.0 + tf.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))


def build_transformer(rng: np.random.RandomState) -> Built:
    """One hand-written transformer encoder layer (2 heads, post-LN, GELU FFN); Adam, 5 steps.

    Word + position embeddings; ``encoder/layer_0/attention/{query,key,value,output}``,
    ``attention/layer_norm/{gamma,beta}``, ``ffn/{intermediate,output}``, ``ffn/layer_norm``;
    mean over time, ``classifier`` dense 3, softmax. GELU is the tanh approximation.
    """
    tokens = v1.placeholder(tf.int32, [None, SEQ_LEN], name="tokens")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    with v1.variable_scope("embeddings"):
        word = v1.get_variable("word", [50, HIDDEN])
        position = v1.get_variable("position", [SEQ_LEN, HIDDEN])
    x = tf.nn.embedding_lookup(word, tokens) + position

    def split_heads(t: tf.Tensor) -> tf.Tensor:  # [B, T, H*D] -> [B, H, T, D]
        return tf.transpose(tf.reshape(t, [-1, SEQ_LEN, HEADS, HEAD_SIZE]), [0, 2, 1, 3])

    with v1.variable_scope("encoder/layer_0"):
        with v1.variable_scope("attention"):
            q = split_heads(v1.layers.dense(x, HIDDEN, name="query"))
            k = split_heads(v1.layers.dense(x, HIDDEN, name="key"))
            v = split_heads(v1.layers.dense(x, HIDDEN, name="value"))
            scores = tf.matmul(q, k, transpose_b=True) * (1.0 / np.sqrt(HEAD_SIZE))
            context = tf.matmul(tf.nn.softmax(scores), v)  # [B, H, T, D]
            context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, SEQ_LEN, HIDDEN])
            attn = v1.layers.dense(context, HIDDEN, name="output")
            with v1.variable_scope("layer_norm"):
                x = _layer_norm(x + attn)
        with v1.variable_scope("ffn"):
            h = _gelu_tanh(v1.layers.dense(x, 64, name="intermediate"))
            h = v1.layers.dense(h, HIDDEN, name="output")
            with v1.variable_scope("layer_norm"):
                x = _layer_norm(x + h)
    pooled = tf.reduce_mean(x, axis=1)
    logits = v1.layers.dense(pooled, 3, name="classifier")
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    feeds = [
        {tokens: rng.randint(0, 50, size=(16, SEQ_LEN)).astype(np.int32),
         labels: rng.randint(0, 3, size=16)}
        for _ in range(5)
    ]
    return Built(
        inputs={"tokens": tokens},
        outputs={"probs": probs},
        train_op=train_op,
        train_feeds=feeds,
        shard=lambda r: {"tokens": r.randint(0, 50, size=(32, SEQ_LEN)).astype(np.int32)},
    )


def _save_frozen(sess: v1.Session, folder: Path, built: Built) -> dict:
    """The trained graph frozen: variables become `Const` nodes of the same names (`frozen.pb`)."""
    outputs = [t.op.name for t in built.outputs.values()]
    frozen = v1.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), outputs)
    frozen = v1.graph_util.extract_sub_graph(frozen, outputs)  # the inference graph only, as people shipped it
    (folder / "frozen.pb").write_bytes(frozen.SerializeToString())
    return {"format": "frozen_graph", "artifact": "frozen.pb",
            "variables": sum(n.op == "Const" and n.name.endswith(("kernel", "bias", "gamma", "beta", "moving_mean",
                                                                 "moving_variance")) for n in frozen.node)}


def build_frozen_cnn(rng: np.random.RandomState) -> Built:
    """Conv + batch norm + relu, max-pool, conv, global mean, dense 5, softmax on 16x16x3; Adam, 5 steps;
    shipped as a frozen GraphDef (no checkpoint)."""
    images = v1.placeholder(tf.float32, [None, 16, 16, 3], name="images")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.conv2d(images, 8, 3, padding="same", use_bias=False, name="conv1")
    h = tf.nn.relu(v1.layers.batch_normalization(h, training=False, epsilon=1e-3, name="bn1"))
    h = v1.layers.max_pooling2d(h, 2, 2)
    h = v1.layers.conv2d(h, 16, 3, activation=tf.nn.relu, name="conv2")
    logits = v1.layers.dense(tf.reduce_mean(h, axis=[1, 2]), 5, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=v1.train.get_or_create_global_step())
    feeds = [{images: rng.uniform(size=(8, 16, 16, 3)).astype(np.float32), labels: rng.randint(0, 5, size=8)}
             for _ in range(5)]
    return Built(inputs={"images": images}, outputs={"probs": probs}, train_op=train_op, train_feeds=feeds,
                 shard=lambda r: {"images": r.uniform(size=(16, 16, 16, 3)).astype(np.float32)}, save=_save_frozen)


SAVEDMODEL_DIR = "savedmodel"


def _save_savedmodel(sess: v1.Session, folder: Path, built: Built) -> dict:
    """A TF1 SavedModel (`simple_save`: tag `serve`, signature `serving_default`) whose signature keys are
    not the tensor names: consumers call `pixels` and get `scores` and `classes`."""
    graph = sess.graph
    outputs = {"scores": built.outputs["scores"], "classes": built.outputs["classes"]}
    v1.saved_model.simple_save(sess, str(folder / SAVEDMODEL_DIR), inputs={"pixels": graph.get_tensor_by_name("x:0")},
                               outputs=outputs)
    variables = tf.train.list_variables(str(folder / SAVEDMODEL_DIR / "variables" / "variables"))
    return {"format": "saved_model", "artifact": SAVEDMODEL_DIR, "variables": len(variables)}


def build_savedmodel_mlp(rng: np.random.RandomState) -> Built:
    """64-32-4 MLP (relu, softmax) and its argmax, exported as a TF1 SavedModel with `simple_save`; Adam, 5
    steps. Served as `pixels` -> `scores`, `classes` (the tensors are `x`, `scores`, `classes`)."""
    x = v1.placeholder(tf.float32, [None, 64], name="x")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.dense(x, 32, activation=tf.nn.relu, name="hidden")
    logits = v1.layers.dense(h, 4, name="out")
    scores = tf.nn.softmax(logits, name="scores")
    classes = tf.argmax(scores, axis=1, name="classes")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=v1.train.get_or_create_global_step())
    feeds = [{x: rng.normal(size=(16, 64)).astype(np.float32), labels: rng.randint(0, 4, size=16)} for _ in range(5)]
    return Built(inputs={"pixels": x}, outputs={"scores": scores, "classes": classes}, train_op=train_op,
                 train_feeds=feeds, shard=lambda r: {"pixels": r.normal(size=(32, 64)).astype(np.float32)},
                 save=_save_savedmodel)


ESTIMATOR_STEPS = (5, 10)  # checkpoints an Estimator model_dir keeps: model.ckpt-5, model.ckpt-10 (latest)


def build_estimator_dnn(rng: np.random.RandomState) -> Built:
    """A DNN regressor as an Estimator wrote it: fed from a `tf.data` iterator (`IteratorGetNext`), two
    dense layers and a head; Adagrad, 10 steps. See `_save_estimator_dir`."""
    data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(80, 8)).astype(np.float32),
                                               rng.normal(size=(80, 1)).astype(np.float32)))
    features, targets = v1.data.make_one_shot_iterator(data.repeat().batch(8)).get_next()
    with v1.variable_scope("dnn"):
        h = v1.layers.dense(features, 16, activation=tf.nn.relu, name="hiddenlayer_0")
        h = v1.layers.dense(h, 8, activation=tf.nn.relu, name="hiddenlayer_1")
        predictions = v1.layers.dense(h, 1, name="logits")
    loss = v1.losses.mean_squared_error(targets, predictions)
    train_op = v1.train.AdagradOptimizer(0.1).minimize(loss, global_step=v1.train.get_or_create_global_step())
    return Built(inputs={"features": features}, outputs={"predictions": predictions}, train_op=train_op,
                 train_feeds=[{} for _ in range(ESTIMATOR_STEPS[0])],
                 shard=lambda r: {"features": r.normal(size=(24, 8)).astype(np.float32)}, save=_save_estimator_dir)


def _save_estimator_dir(sess: v1.Session, folder: Path, built: Built) -> dict:
    """An Estimator `model_dir` as `tf.estimator` (gone from TF >= 2.16) wrote it: `graph.pbtxt`
    (`tf.io.write_graph`), a checkpoint `model.ckpt-N` from a `Saver` with `global_step` every few steps
    of training (here at 5 and 10), and the `checkpoint` state file naming the latest (relative paths,
    so the folder can move)."""
    model_dir = folder / "model_dir"
    saver = v1.train.Saver(save_relative_paths=True, max_to_keep=5)
    step = v1.train.get_global_step()
    tf.io.write_graph(sess.graph.as_graph_def(), str(model_dir), "graph.pbtxt")
    for target in ESTIMATOR_STEPS:
        while sess.run(step) < target:
            sess.run(built.train_op)
        saver.save(sess, str(model_dir / CKPT_NAME), global_step=target)
    variables = tf.train.list_variables(str(model_dir / f"{CKPT_NAME}-{ESTIMATOR_STEPS[-1]}"))
    return {"format": "estimator_dir", "artifact": "model_dir", "variables": len(variables),
            "checkpoints": [f"{CKPT_NAME}-{step}" for step in ESTIMATOR_STEPS], "train_steps": ESTIMATOR_STEPS[-1]}


def _examples(rng: np.random.RandomState, n: int) -> np.ndarray:
    """`n` serialized `tf.Example`s of example_dnn: `x`, 4 floats; `extras`, 0 to 5 floats."""
    out = []
    for _ in range(n):
        feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=rng.normal(size=4).tolist())),
                   "extras": tf.train.Feature(float_list=tf.train.FloatList(
                       value=rng.uniform(size=rng.randint(0, 6)).tolist()))}
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        out.append(example.SerializeToString(deterministic=True))  # map order fixed: same bytes each build
    return np.array(out, dtype=object)


def _save_serving_savedmodel(sess: v1.Session, folder: Path, built: Built) -> dict:
    """A TF1 SavedModel as an Estimator's serving export writes it (`saved_model.Builder`, tag `serve`,
    signature `serving_default`): its input is the serialized tf.Examples, `examples`."""
    builder = v1.saved_model.Builder(str(folder / SAVEDMODEL_DIR))
    signature = v1.saved_model.predict_signature_def(inputs=built.inputs, outputs=built.outputs)
    builder.add_meta_graph_and_variables(sess, [v1.saved_model.tag_constants.SERVING],
                                         signature_def_map={"serving_default": signature})
    builder.save()
    variables = tf.train.list_variables(str(folder / SAVEDMODEL_DIR / "variables" / "variables"))
    return {"format": "saved_model", "artifact": SAVEDMODEL_DIR, "variables": len(variables)}


def build_example_dnn(rng: np.random.RandomState) -> Built:
    """A classifier served on serialized tf.Examples, as an Estimator's serving export is: a string placeholder
    `input_example_tensor` parsed by `tf.io.parse_example` (op `ParseExample/ParseExampleV2`: a fixed-length
    `x` of 4 floats, a var-length `extras` densified and summed), then 5-16-3 dense layers and a softmax; Adam,
    10 steps. Its shards are TFRecord files of tf.Examples."""
    serialized = v1.placeholder(tf.string, [None], name="input_example_tensor")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    spec = {"x": tf.io.FixedLenFeature([4], tf.float32), "extras": tf.io.VarLenFeature(tf.float32)}
    features = tf.io.parse_example(serialized, spec, name="ParseExample")
    extras = tf.sparse.to_dense(features["extras"], name="extras")
    h = tf.concat([features["x"], tf.reduce_sum(extras, axis=1, keepdims=True)], axis=1)
    h = v1.layers.dense(h, 16, activation=tf.nn.relu, name="hidden")
    logits = v1.layers.dense(h, 3, name="logits")
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=v1.train.get_or_create_global_step())
    feeds = [{serialized: _examples(rng, 16), labels: rng.randint(0, 3, size=16)} for _ in range(10)]
    return Built(inputs={"examples": serialized}, outputs={"probs": probs}, train_op=train_op, train_feeds=feeds,
                 shard=lambda r: {"examples": _examples(r, 24)}, save=_save_serving_savedmodel,
                 tfrecord_shards=True)


MODELS: dict[str, Callable[[np.random.RandomState], Built]] = {
    "linear": build_linear,
    "mlp": build_mlp,
    "mnist_cnn": build_mnist_cnn,
    "resnet_bn": build_resnet_bn,
    "text_lstm": build_text_lstm,
    "gru_seq": build_gru_seq,
    "transformer": build_transformer,
    "frozen_cnn": build_frozen_cnn,
    "savedmodel_mlp": build_savedmodel_mlp,
    "estimator_dnn": build_estimator_dnn,
    "example_dnn": build_example_dnn,
}


def write_token_tfrecords(folder: Path) -> None:
    """text_lstm's verification data as a TFRecord of `tf.Example`s (`tf.io.TFRecordWriter`): per record a
    var-length `token_ids` int64 list of 8..20 ids in [1, 100) (the model pads to 20 with 0) and a `label`."""
    rng = np.random.RandomState(SEED + 2)
    with tf.io.TFRecordWriter(str(folder / "tokens.tfrecord")) as writer:
        for _ in range(96):
            ids = rng.randint(1, 100, size=rng.randint(8, 21))
            feature = {"token_ids": tf.train.Feature(int64_list=tf.train.Int64List(value=ids.tolist())),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(rng.randint(0, 2))]))}
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString(deterministic=True))  # map order fixed: same bytes each build


def write_foreign_npz(folder: Path) -> None:
    """mnist_cnn's verification data as another tool saved it: `.npz` archives whose key is `images__0`."""
    rng = np.random.RandomState(SEED + 3)
    for i in range(2):
        np.savez(folder / f"batch-{i:03d}.npz", images__0=rng.uniform(size=(24, 28, 28, 1)).astype(np.float32))


# model -> (sub-folder, writer): verification data in another format than the shards
EXTRA_DATA: dict[str, tuple[str, Callable[[Path], None]]] = {
    "text_lstm": ("tfrecords", write_token_tfrecords),
    "mnist_cnn": ("foreign", write_foreign_npz),
}


def write_extra_data(name: str, folder: Path) -> str | None:
    """Write model `name`'s extra verification data into `folder` unless it is there; its sub-folder, if written.
    Written in a temporary sibling and renamed, so a crash leaves none half-written."""
    if name not in EXTRA_DATA or (folder / EXTRA_DATA[name][0]).exists():
        return None
    sub, write = EXTRA_DATA[name]
    tmp = Path(tempfile.mkdtemp(prefix=f".{sub}.tmp-", dir=folder))
    tmp.chmod(0o755)
    try:
        write(tmp)
        os.replace(tmp, folder / sub)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sub


def save_checkpoint(sess: v1.Session, folder: Path, built: Built) -> dict:
    """A `.meta` graph and a name-based checkpoint `model.ckpt` (the default)."""
    # write_state=False: no 'checkpoint' file, which would record the temporary path.
    v1.train.Saver().save(sess, str(folder / CKPT_NAME), write_meta_graph=True, write_state=False)
    return {"format": "meta", "artifact": f"{CKPT_NAME}.meta",
            "variables": len(tf.train.list_variables(str(folder / CKPT_NAME)))}


def write_tfrecord(path: Path, records: np.ndarray, gzip: bool = False) -> None:
    """Serialized records as a TFRecord file (`tf.io.TFRecordWriter`); GZIP-compressed as `<path>.gz`."""
    options = tf.io.TFRecordOptions(compression_type="GZIP") if gzip else None
    with tf.io.TFRecordWriter(str(path) + (".gz" if gzip else ""), options) as writer:
        for record in records:
            writer.write(record)


def write_model(name: str, folder: Path) -> tuple[int, int]:
    """Build, train and save model `name` into `folder`; return (variables or constants saved, train steps)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(SEED)
        built = MODELS[name](np.random.RandomState(SEED))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for feed in built.train_feeds:
                sess.run(built.train_op, feed_dict=feed)
            artifact = (built.save or save_checkpoint)(sess, folder, built)

    shards = folder / "shards"
    shards.mkdir()
    rng = np.random.RandomState(SEED + 1)
    for i in range(N_SHARDS):
        arrays = built.shard(rng)
        assert set(arrays) == set(built.inputs), (name, sorted(arrays), sorted(built.inputs))
        if built.tfrecord_shards:
            write_tfrecord(shards / f"shard-{i:03d}.tfrecord", next(iter(arrays.values())), gzip=i == N_SHARDS - 1)
        else:
            np.savez(shards / f"shard-{i:03d}.npz", **arrays)
    write_extra_data(name, folder)

    manifest = {
        "name": name,
        "inputs": {k: t.name for k, t in built.inputs.items()},
        "outputs": {k: t.name for k, t in built.outputs.items()},
        "tf_version": tf.__version__,
        "train_steps": len(built.train_feeds),
        **artifact,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return artifact["variables"], manifest["train_steps"]


def build_atomically(name: str, out: Path, write: Callable[[Path], T]) -> tuple[T, float]:
    """Run `write(folder)` in a temporary sibling folder and rename it to `out/name` only when it
    succeeded, so a crash never leaves a half-written model (the previous build is put back)."""
    final = out / name
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the final folder should be readable like any other
    old: Path | None = None
    try:
        result = write(tmp)
        if final.exists():  # incomplete leftover, or --force: move aside, then swap in
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=out))
            os.replace(final, old / name)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists() and (old / name).exists():
            os.replace(old / name, final)  # put the previous build back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return result, time.perf_counter() - start


def build_one(name: str, out: Path, force: bool) -> None:
    """Build one model atomically, unless a complete build is there already."""
    if (out / name / "manifest.json").exists() and not force:
        added = write_extra_data(name, out / name)
        print(f"{name:<11} skipped (already built; --force to rebuild)"
              f"{f'; wrote its {added}/' if added else ''}", flush=True)
        return
    (n_keys, steps), took = build_atomically(name, out, lambda folder: write_model(name, folder))
    print(f"{name:<14} {n_keys:3d} variables, {steps:2d} steps, {took:5.1f} s", flush=True)


def run_cli(argv: list[str] | None, description: str, models: dict, default: list[str],
            build_one: Callable[[str, Path, bool], None], label: str, note: str = "") -> int:
    """The zoo scripts' shared command line: --out, --only NAME..., --force; build; one summary line."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="output folder (default: the folder holding this script)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                        help=f"build only these models (known: {', '.join(models)}; default: {', '.join(default)})")
    parser.add_argument("--force", action="store_true", help="rebuild models already built")
    args = parser.parse_args(argv)

    names = args.only or default
    unknown = [n for n in names if n not in models]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}; known models: {', '.join(models)}")

    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in dict.fromkeys(names):  # dedupe, keep order
        build_one(name, args.out, args.force)
    print(f"{label}: {len(set(names))} model(s) in {args.out} ({time.perf_counter() - start:.1f} s, "
          f"TF {tf.__version__}{note})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    return run_cli(argv, "Build the TF1-era example model zoo.", MODELS, list(MODELS), build_one, "zoo")


if __name__ == "__main__":
    sys.exit(main())
