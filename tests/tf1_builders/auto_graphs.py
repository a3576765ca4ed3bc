"""TF1 graphs of tests/test_auto.py besides the zoo and tf_slim's networks.

    python tests/tf1_builders/auto_graphs.py OUT

writes `OUT/<name>/` (`model.ckpt.*`, `shards/`, `manifest.json`) for:

- `layers_bn_dropout`: a `tf.compat.v1.layers` CNN with batch norm and dropout behind an `is_training`
  switch (default False), trained 3 Adam steps;
- `unsupported`: a graph with ops `auto` does not translate (ResizeBicubic, Cumprod, ResizeArea);
- `lstm_adagrad`, `lstm_ftrl`: embedding -> `LSTMCell` in `dynamic_rnn` -> dense head, trained 3 steps by
  `AdagradOptimizer` / `FtrlOptimizer`, whose slots sit under the cell's scope
  (`rnn/lstm_cell/kernel/Adagrad`, `…/Ftrl_1`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from common import save_model, tf, v1  # first: TF1 behaviour before TensorFlow is used


def layers_bn_dropout(out: Path, rng: np.random.RandomState) -> None:
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(1)
        x = v1.placeholder(tf.float32, [None, 16, 16, 3], name="images")
        is_training = v1.placeholder_with_default(False, [], name="is_training")
        h = v1.layers.conv2d(x, 8, 3, padding="same", use_bias=False)
        h = tf.nn.relu(v1.layers.batch_normalization(h, training=is_training, epsilon=1e-4))
        h = v1.layers.max_pooling2d(h, 2, 2)
        h = tf.nn.relu6(v1.layers.separable_conv2d(h, 8, 3, padding="same"))  # depthwise + pointwise
        h = v1.layers.dropout(h, 0.5, training=is_training)
        h = v1.layers.flatten(h)
        h = v1.layers.dense(h, 16, activation=tf.nn.leaky_relu)
        h = v1.layers.dropout(h, 0.3, training=is_training)
        probs = tf.nn.softmax(v1.layers.dense(h, 5), name="probs")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, probs)
        with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
            train = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=v1.train.get_or_create_global_step())
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train, {x: rng.rand(8, 16, 16, 3), labels: rng.randint(0, 5, 8), is_training: True})
            shards = [{"images": rng.rand(8, 16, 16, 3).astype(np.float32)} for _ in range(2)]
            save_model(out / "layers_bn_dropout", sess, {"images": x}, {"probs": probs}, shards)


def unsupported(out: Path, rng: np.random.RandomState) -> None:
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 8, 8, 3], name="images")
        h = v1.layers.conv2d(x, 4, 3)
        h = v1.image.resize_bicubic(h, [5, 5])
        h = tf.math.cumprod(h, axis=1)
        h = tf.math.cumprod(h, axis=2)
        y = tf.identity(tf.image.resize(h, [4, 4], method="area"), name="y")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            shards = [{"images": rng.rand(2, 8, 8, 3).astype(np.float32)} for _ in range(2)]
            save_model(out / "unsupported", sess, {"images": x}, {"y": y}, shards)


def lstm_classifier(out: Path, rng: np.random.RandomState, name: str, optimizer: v1.train.Optimizer) -> None:
    """Tokens -> embedding -> LSTMCell(16) in dynamic_rnn -> last step -> dense 3 -> softmax, 3 steps."""
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(2)
        tokens = v1.placeholder(tf.int32, [None, 10], name="tokens")
        labels = v1.placeholder(tf.int64, [None], name="labels")
        emb = tf.nn.embedding_lookup(v1.get_variable("embedding", [50, 8]), tokens)
        outputs, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.LSTMCell(16), emb, dtype=tf.float32)
        logits = v1.layers.dense(outputs[:, -1, :], 3, name="logits")
        probs = tf.nn.softmax(logits, name="probs")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
        train = optimizer.minimize(loss, global_step=v1.train.get_or_create_global_step())
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train, {tokens: rng.randint(0, 50, (16, 10)), labels: rng.randint(0, 3, 16)})
            shards = [{"tokens": rng.randint(0, 50, (16, 10)).astype(np.int32)} for _ in range(2)]
            save_model(out / name, sess, {"tokens": tokens}, {"probs": probs}, shards)


def main(out: Path) -> None:
    rng = np.random.RandomState(0)
    layers_bn_dropout(out, rng)
    unsupported(out, rng)
    lstm_classifier(out, rng, "lstm_adagrad", v1.train.AdagradOptimizer(0.5))
    lstm_classifier(out, rng, "lstm_ftrl", v1.train.FtrlOptimizer(0.5))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
