"""Four small trained TF1 models for tests/test_inventory.py, in one process.

    python tests/tf1_builders/inventory_graphs.py OUT

writes `OUT/<name>/model.ckpt(.meta)` for `mlp_resource` (resource variables: eager execution disabled
only), then, after `disable_v2_behavior()` (process-wide, hence this order), the TF1-era graphs
(reference variables, v1 cond): `mlp` (Adam, a loss summary), `cnn` (batch norm and dropout behind an
`is_training` placeholder, Momentum) and `tutorial` (the TF1 MNIST-tutorial style: a `keep_prob`
placeholder, one-hot labels, the loss computed from the probabilities). Each is trained two steps.
Runs in its own process (tf_keras for `tf.compat.v1.layers`: `TF_USE_LEGACY_KERAS=1`).
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
RNG = np.random.default_rng(0)


def save(out, name, graph, train, feed):
    with v1.Session(graph=graph) as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(2):
            sess.run(train, feed)
        v1.train.Saver().save(sess, str(out / name / "model.ckpt"))


def mlp(out, name):
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 784], name="x")
        y = v1.placeholder(tf.int64, [None], name="y")
        hidden = v1.layers.dense(x, 64, activation=tf.nn.relu, name="dense")
        logits = v1.layers.dense(hidden, 10, name="dense_1")
        tf.nn.softmax(logits, name="probs")
        loss = v1.losses.sparse_softmax_cross_entropy(y, logits)
        v1.summary.scalar("loss", loss)
        v1.summary.merge_all()
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)
        feed = {x: RNG.random((4, 784), dtype=np.float32), y: np.arange(4)}
    save(out, name, graph, train, feed)


def cnn(out, name):
    graph = tf.Graph()
    with graph.as_default():
        images = v1.placeholder(tf.float32, [None, 28, 28, 1], name="images")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        is_training = v1.placeholder(tf.bool, [], name="is_training")
        net = v1.layers.conv2d(images, 8, 3, strides=2, padding="same",
                               activation=tf.nn.relu, name="conv2d")
        net = v1.layers.batch_normalization(net, training=is_training, name="bn")
        net = v1.layers.flatten(net)
        net = v1.layers.dropout(net, rate=0.5, training=is_training)
        logits = v1.layers.dense(net, 10, name="dense")
        tf.nn.softmax(logits, name="probs")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
        step = v1.train.get_or_create_global_step()
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
        feed = {images: RNG.random((4, 28, 28, 1), dtype=np.float32),
                labels: np.arange(4), is_training: True}
    save(out, name, graph, train, feed)


def tutorial(out, name):
    """The TF1 MNIST-tutorial style: keep_prob placeholder, one-hot labels, loss from probs."""
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 784], name="x")
        y_ = v1.placeholder(tf.float32, [None, 10], name="y_")
        keep_prob = v1.placeholder(tf.float32, name="keep_prob")
        w1 = v1.get_variable("W1", [784, 32])
        b1 = v1.get_variable("b1", [32], initializer=v1.zeros_initializer())
        hidden = v1.nn.dropout(tf.nn.relu(tf.matmul(x, w1) + b1), keep_prob=keep_prob)
        w2 = v1.get_variable("W2", [32, 10])
        b2 = v1.get_variable("b2", [10], initializer=v1.zeros_initializer())
        probs = tf.nn.softmax(tf.matmul(hidden, w2) + b2, name="probs")
        loss = tf.reduce_mean(-tf.reduce_sum(y_ * tf.math.log(probs), axis=[1]))
        train = v1.train.GradientDescentOptimizer(0.5).minimize(loss, name="train")
        feed = {x: RNG.random((2, 784), dtype=np.float32),
                y_: np.eye(10, dtype=np.float32)[:2], keep_prob: 0.5}
    save(out, name, graph, train, feed)


def main(out: Path) -> None:
    v1.disable_eager_execution()
    mlp(out, "mlp_resource")
    v1.disable_v2_behavior()
    mlp(out, "mlp")
    cnn(out, "cnn")
    tutorial(out, "tutorial")
    print("built")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
