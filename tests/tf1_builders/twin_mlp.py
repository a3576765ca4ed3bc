"""A TF1 MLP whose two middle layers have the same shapes, built by the example zoo's own script.

    python tests/tf1_builders/twin_mlp.py OUT

adds `twin_mlp` (16-32-32-32-4, `dense_1` and `dense_2` both [32, 32]; trained 5 Adam steps) to
zoo/build.py's models and builds only it: `OUT/twin_mlp/` as the zoo writes every model (checkpoint,
`shards/shard-00N.npz` with input `x`, manifest), from the zoo's seeds. tests/test_stages.py swaps the
two same-shaped layers in a name map: restore cannot tell, verification must.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "zoo"))

import build  # zoo/build.py: the TF1 environment, training, saving, shards
from build import Built, np, tf, v1


def build_twin_mlp(rng):
    """16-32-32-32-4 MLP: `dense_1` and `dense_2` have the same shapes."""
    x = v1.placeholder(tf.float32, [None, 16], name="x")
    labels = v1.placeholder(tf.int64, [None], name="labels")
    h = v1.layers.dense(x, 32, activation=tf.nn.relu)
    h = v1.layers.dense(h, 32, activation=tf.nn.relu)
    h = v1.layers.dense(h, 32, activation=tf.nn.relu)
    logits = v1.layers.dense(h, 4)
    probs = tf.nn.softmax(logits, name="probs")
    loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = v1.train.AdamOptimizer(1e-2).minimize(loss, global_step=v1.train.get_or_create_global_step())
    feeds = [{x: rng.uniform(size=(32, 16)).astype(np.float32), labels: rng.randint(0, 4, size=32)}
             for _ in range(5)]
    return Built(inputs={"x": x}, outputs={"probs": probs}, train_op=train_op, train_feeds=feeds,
                 shard=lambda r: {"x": r.uniform(size=(64, 16)).astype(np.float32)})


if __name__ == "__main__":
    build.MODELS["twin_mlp"] = build_twin_mlp
    sys.exit(build.main(["--out", sys.argv[1], "--only", "twin_mlp"]))
