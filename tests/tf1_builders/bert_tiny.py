"""A tiny BERT written by google's own `modeling.py` (the `bert-tensorflow` package), TF1-era graph.

    python tests/tf1_builders/bert_tiny.py OUT

writes `OUT/bert_tiny/`: `model.ckpt.*` (a classifier on the pooled output, trained 3 Adam steps),
`shards/shard-00N.npz` (`input_ids`, `input_mask` with padding, `token_type_ids`), `manifest.json`.
Inputs `input_ids:0`, `input_mask:0`, `token_type_ids:0` (int32 [?, 16]); outputs `pooled:0`,
`sequence:0`, `probs:0`. Built with `is_training=False` (no dropout), as BERT models are exported
for serving. Runs in its own process (tf_keras, `disable_v2_behavior`, the shims below).

`modeling.py` imports `tensorflow.contrib.layers` for `layer_norm`, which TF 2 no longer has:
`tf_slim.layers` (the same code, moved out of contrib) stands in for it.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "zoo"))

import numpy as np
import tensorflow as tf
import tf_slim
from slim_nets import apply_tf_slim_shims  # noqa: F401  (tf_slim on TF 2.21; disables v2 behaviour)

contrib = types.ModuleType("tensorflow.contrib")
contrib.layers = tf_slim.layers
sys.modules["tensorflow.contrib"] = contrib
sys.modules["tensorflow.contrib.layers"] = tf_slim.layers

from bert import modeling  # noqa: E402

v1 = tf.compat.v1
SEQ, VOCAB, CLASSES, SHARDS, ROWS = 16, 64, 3, 2, 8
CONFIG = modeling.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)


def inputs(rng: np.random.RandomState, rows: int) -> dict[str, np.ndarray]:
    lengths = rng.randint(4, SEQ + 1, size=rows)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    return {"input_ids": (rng.randint(1, VOCAB, size=(rows, SEQ)) * mask).astype(np.int32),
            "input_mask": mask, "token_type_ids": (rng.rand(rows, SEQ) < 0.5).astype(np.int32) * mask}


def main(out: Path) -> None:
    folder = out / "bert_tiny"
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        feeds = {name: v1.placeholder(tf.int32, [None, SEQ], name=name)
                 for name in ("input_ids", "input_mask", "token_type_ids")}
        labels = v1.placeholder(tf.int32, [None], name="labels")
        model = modeling.BertModel(CONFIG, is_training=False, input_ids=feeds["input_ids"],
                                   input_mask=feeds["input_mask"], token_type_ids=feeds["token_type_ids"])
        pooled = tf.identity(model.get_pooled_output(), name="pooled")
        tf.identity(model.get_sequence_output(), name="sequence")
        logits = v1.layers.dense(pooled, CLASSES, name="classifier")
        tf.nn.softmax(logits, name="probs")
        loss = v1.losses.sparse_softmax_cross_entropy(labels, logits)
        train = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=v1.train.get_or_create_global_step())
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                batch = inputs(rng, ROWS)
                sess.run(train, {**{feeds[k]: v for k, v in batch.items()},
                                 labels: rng.randint(0, CLASSES, size=ROWS)})
            v1.train.Saver().save(sess, str(folder / "model.ckpt"), write_state=False)
    for i in range(SHARDS):
        np.savez(folder / "shards" / f"shard-{i:03d}.npz", **inputs(rng, ROWS))
    (folder / "manifest.json").write_text(json.dumps({
        "inputs": {k: f"{k}:0" for k in feeds}, "outputs": {k: f"{k}:0" for k in ("pooled", "sequence", "probs")},
        "tf_version": tf.__version__}, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
