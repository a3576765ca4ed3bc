"""The TF1 references of tests/test_transforms.py: one TF1-era graph holding every op a transform replaces.

    python tests/tf1_builders/transform_refs.py OUT

writes `OUT/model.ckpt.*` (with its `.meta`; a training graph with Adam slots, as checkpoints come) and
`OUT/refs.npz`: seeded random inputs as `in:NAME`, the TF1 outputs as `out:NAME` and every variable by
name as `var:NAME`. Runs in its own process (tf_keras for `tf.compat.v1.layers`, `disable_v2_behavior`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from block_cells import GRUBlockCell  # contrib's fused GRU, as TF 2.21 builds it

v1 = tf.compat.v1
RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


INPUTS = {
    "seq": rand(3, 5, 4),  # [B, T, in] for the recurrent cells
    "map7": rand(2, 7, 7, 3),  # a 7x7 map for a VGG fc6-style conv
    "map4": rand(2, 4, 4, 3),  # for a 1x1 conv
    "tokens": rand(2, 5, 8),  # [B, T, d] for attention (d = 2 heads x 4)
    "rows": rand(4, 6),  # for a fused qkv kernel
    "a": rand(3, 4, 5),
    "b": rand(3, 2, 5),
    "bn": rand(2, 4, 4, 3) * 2 + 1,
}


def attention(x: tf.Tensor, heads: int, key_dim: int, scope: str) -> tf.Tensor:
    """Multi-head self-attention written the TF1 way: 2-D dense projections, split heads."""

    def split_heads(t: tf.Tensor) -> tf.Tensor:
        return tf.transpose(tf.reshape(t, [-1, 5, heads, key_dim]), [0, 2, 1, 3])

    with v1.variable_scope(scope):
        q, k, v = (split_heads(v1.layers.dense(x, heads * key_dim, name=n)) for n in ("query", "key", "value"))
        scores = tf.matmul(q, k, transpose_b=True) / np.sqrt(key_dim).astype(np.float32)
        context = tf.matmul(tf.nn.softmax(scores), v)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, 5, heads * key_dim])
        return v1.layers.dense(context, 8, name="output")


def references(x: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Every reference output, by name, built from the input placeholders `x`."""
    is_training = v1.placeholder_with_default(False, [], name="is_training")
    cells = {"lstm": v1.nn.rnn_cell.LSTMCell(8, forget_bias=1.0),
             "basic": v1.nn.rnn_cell.BasicLSTMCell(8, forget_bias=0.5),
             "gru": v1.nn.rnn_cell.GRUCell(8),
             "projected": v1.nn.rnn_cell.LSTMCell(8, forget_bias=0.5, use_peepholes=True, num_proj=5, cell_clip=0.8,
                                                  proj_clip=0.3),
             "basic_rnn": v1.nn.rnn_cell.BasicRNNCell(8),
             "gru_block": GRUBlockCell(8)}
    cells["stack"] = v1.nn.rnn_cell.MultiRNNCell(
        [v1.nn.rnn_cell.LSTMCell(8, forget_bias=0.25), v1.nn.rnn_cell.BasicLSTMCell(8, forget_bias=2.0)])
    out = {name: v1.nn.dynamic_rnn(cell, x["seq"], dtype=tf.float32, scope=name)[0] for name, cell in cells.items()}
    fc6 = v1.layers.conv2d(x["map7"], 5, 7, padding="valid", name="fc6")
    out["fc6"] = tf.reshape(fc6, [-1, 5])
    out["conv1x1"] = v1.layers.conv2d(x["map4"], 6, 1, name="conv1x1")
    out["mha"] = attention(x["tokens"], 2, 4, "mha")
    out["transpose"] = tf.transpose(x["a"], [2, 0, 1])
    out["reshape"] = tf.reshape(x["a"], [4, 15])
    out["split0"], out["split1"] = tf.split(x["a"], [1, 3], axis=1)
    out["concat"] = tf.concat([x["a"], x["b"]], axis=1)
    qkv = v1.get_variable("qkv/kernel", [6, 18])
    out["q"], out["k"], out["v"] = tf.split(tf.matmul(x["rows"], qkv), 3, axis=1)
    out["bn"] = v1.layers.batch_normalization(x["bn"], scale=False, epsilon=1e-5, training=False, name="bn")
    out["bn_cond"] = v1.layers.batch_normalization(x["bn"], epsilon=1e-4, training=is_training, name="bn_cond")
    out["bn_unfused"] = v1.layers.batch_normalization(x["bn"], epsilon=2e-3, fused=False, training=False,
                                                      name="bn_unfused")
    return out


def main(out_dir: Path) -> None:
    v1.disable_v2_behavior()
    graph = tf.Graph()
    with graph.as_default():
        x = {k: v1.placeholder(tf.float32, v.shape, name=k) for k, v in INPUTS.items()}
        out = references(x)
        # A training graph, as checkpoints come with: gradient loops read the same variables.
        loss = sum(tf.reduce_sum(out[k]) for k in ("lstm", "basic", "stack", "bn_cond"))
        v1.train.AdamOptimizer(1e-3).minimize(loss)
        init = v1.global_variables_initializer()
        saver = v1.train.Saver()

    with v1.Session(graph=graph) as sess:
        sess.run(init)
        for var in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES):
            shape = var.shape.as_list()
            value = (RNG.uniform(0.05, 1.0, shape) if "moving_variance" in var.name
                     else RNG.normal(scale=0.5, size=shape))
            var.load(value.astype(np.float32), sess)
        results = sess.run(out, {x[k]: v for k, v in INPUTS.items()})
        weights = {v.op.name: sess.run(v) for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
        saver.save(sess, str(out_dir / "model.ckpt"))

    arrays = {f"in:{k}": v for k, v in INPUTS.items()}
    arrays |= {f"out:{k}": v for k, v in results.items()}
    arrays |= {f"var:{k}": v for k, v in weights.items()}
    np.savez(out_dir / "refs.npz", **arrays)
    print("built")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
