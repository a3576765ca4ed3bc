"""TF1 graphs of tests/test_auto.py besides the zoo and tf_slim's networks.

    python tests/tf1_builders/auto_graphs.py OUT

writes `OUT/<name>/` (`model.ckpt.*`, `shards/`, `manifest.json`) for:

- `layers_bn_dropout`: a `tf.compat.v1.layers` CNN with batch norm and dropout behind an `is_training`
  switch (default False), trained 3 Adam steps;
- `unsupported`: a graph with ops `auto` does not translate (ResizeBicubic, Cumprod, ResizeArea);
- `lstm_adagrad`, `lstm_ftrl`: embedding -> `LSTMCell` in `dynamic_rnn` -> dense head, trained 3 steps by
  `AdagradOptimizer` / `FtrlOptimizer`, whose slots sit under the cell's scope
  (`rnn/lstm_cell/kernel/Adagrad`, `…/Ftrl_1`);
- `nchw_convnet`: a channels_first CNN TF cannot run on CPU, with its outputs from an NHWC twin.
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


def nchw_convnet(out: Path, rng: np.random.RandomState) -> None:
    """A `tf.compat.v1.layers` CNN written channels_first (Conv2D, BiasAdd, FusedBatchNormV3, MaxPool, AvgPool
    NCHW), which TF cannot run on CPU; `expected.npz` holds its outputs computed by an NHWC twin (the same
    layers channels_last, restored from this checkpoint, fed and read transposed)."""

    def net(x: tf.Tensor, channels_first: bool) -> tf.Tensor:
        fmt, axis = ("channels_first", 1) if channels_first else ("channels_last", -1)
        init = v1.random_uniform_initializer(-0.5, 0.5)
        h = v1.layers.conv2d(x, 6, 3, padding="same", data_format=fmt, name="conv1", bias_initializer=init)
        h = v1.layers.batch_normalization(h, axis=axis, training=False, name="bn1",
                                          moving_variance_initializer=v1.random_uniform_initializer(0.5, 1.5),
                                          moving_mean_initializer=init, gamma_initializer=init, beta_initializer=init)
        h = v1.layers.max_pooling2d(tf.nn.relu(h), 2, 2, data_format=fmt)
        h = v1.layers.conv2d(h, 4, 3, strides=2, padding="valid", data_format=fmt, name="conv2",
                             bias_initializer=init)
        return v1.layers.average_pooling2d(h, 2, 1, padding="same", data_format=fmt)

    images = rng.rand(2, 8, 3, 12, 12).astype(np.float32)
    g = tf.Graph()
    with g.as_default():
        v1.set_random_seed(3)
        x = v1.placeholder(tf.float32, [None, 3, 12, 12], name="images")
        y = tf.identity(net(x, channels_first=True), name="y")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            save_model(out / "nchw_convnet", sess, {"images": x}, {"y": y}, [{"images": batch} for batch in images])
    twin = tf.Graph()
    with twin.as_default():
        x = v1.placeholder(tf.float32, [None, 3, 12, 12], name="images")
        y = tf.transpose(net(tf.transpose(x, [0, 2, 3, 1]), channels_first=False), [0, 3, 1, 2])
        with v1.Session(graph=twin) as sess:
            v1.train.Saver().restore(sess, str(out / "nchw_convnet" / "model.ckpt"))
            expected = {f"shard-{i:03d}": sess.run(y, {x: batch}) for i, batch in enumerate(images)}
    np.savez(out / "nchw_convnet" / "expected.npz", **expected)


def main(out: Path) -> None:
    rng = np.random.RandomState(0)
    layers_bn_dropout(out, rng)
    unsupported(out, rng)
    lstm_classifier(out, rng, "lstm_adagrad", v1.train.AdagradOptimizer(0.5))
    lstm_classifier(out, rng, "lstm_ftrl", v1.train.FtrlOptimizer(0.5))
    nchw_convnet(out, np.random.RandomState(3))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
