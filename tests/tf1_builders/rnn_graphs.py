"""TF1 recurrent models of tests/test_auto_rnn.py: real `tf.compat.v1.nn.rnn_cell` cells (and contrib's fused
cells as TF 2.21 builds them: block_cells.py) in every form `auto` translates, each trained a few steps by a
real optimizer and saved by a `Saver` with two shards.

    python tests/tf1_builders/rnn_graphs.py OUT

writes `OUT/<name>/` (`model.ckpt.*`, `shards/`, `manifest.json`) for:

- `final_state`: tokens -> embedding -> `LSTMCell` in dynamic_rnn -> dense on `state.h` (the TF1 text classifier);
- `stacked_lengths`: a `MultiRNNCell` of two LSTMCells with `sequence_length`: its outputs and both cells' states;
- `bidirectional`: `bidirectional_dynamic_rnn` of LSTMCells with `sequence_length`: a tagger on the concatenated
  outputs, a classifier on both final states (and the tags' mean);
- `peephole_projection`: `LSTMCell(use_peepholes=True, num_proj=..., cell_clip=..., proj_clip=...)`, with lengths;
- `gru`: a `GRUCell`, outputs and final state; `basic_rnn`: a `BasicRNNCell`, final state;
- `block_cells`: contrib's `LSTMBlockCell` (peepholes, cell clip) and `GRUBlockCell` in dynamic_rnn, and
  `LSTMBlockFusedCell` (one `BlockLSTM`);
- `static_rnn`: `static_rnn` of a MultiRNNCell (GRUCell, LSTMCell): the last output and the outputs stacked;
- `unsupported`: forms `auto` refuses (a dynamic_rnn from a given initial state, a static_rnn with lengths, a
  cell in a `ResidualWrapper`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from block_cells import GRUBlockCell, LSTMBlockCell, lstm_block_fused  # imports common: TF1 behaviour first
from common import save_model, tf, v1

ROWS, STEPS, VOCAB, CLASSES = 16, 7, 30, 3
rnn_cell = v1.nn.rnn_cell
Tensors = dict[str, tf.Tensor]


def tokens() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Token ids, their lengths and their embeddings."""
    ids = v1.placeholder(tf.int32, [None, STEPS], name="tokens")
    lengths = v1.placeholder(tf.int32, [None], name="lengths")
    return ids, lengths, tf.nn.embedding_lookup(v1.get_variable("embedding", [VOCAB, 6]), ids)


def feed(rng: np.random.RandomState, inputs: Tensors) -> dict[str, np.ndarray]:
    """A batch for `inputs`: token ids, lengths from 0 to STEPS (a batch holds both), or floats."""
    arrays = {}
    for name, tensor in inputs.items():
        if name == "lengths":
            arrays[name] = np.concatenate([[0, STEPS], rng.randint(1, STEPS + 1, ROWS - 2)]).astype(np.int32)
        elif tensor.dtype == tf.int32:
            arrays[name] = rng.randint(0, VOCAB, (ROWS, STEPS)).astype(np.int32)
        else:
            arrays[name] = rng.rand(ROWS, *tensor.shape.as_list()[1:]).astype(np.float32)
    return arrays


def classifier(features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits, probs) of a dense head."""
    logits = v1.layers.dense(features, CLASSES, name="logits")
    return logits, tf.nn.softmax(logits, name="probs")


def final_state() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, _, emb = tokens()
    _, state = v1.nn.dynamic_rnn(rnn_cell.LSTMCell(16), emb, dtype=tf.float32)
    logits, probs = classifier(state.h)
    return {"tokens": ids}, {"probs": probs}, logits


def stacked_lengths() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, lengths, emb = tokens()
    cell = rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(12, forget_bias=0.5), rnn_cell.LSTMCell(8)])
    outputs, (low, high) = v1.nn.dynamic_rnn(cell, emb, sequence_length=lengths, dtype=tf.float32)
    logits, probs = classifier(tf.concat([low.h, high.c], 1))
    return {"tokens": ids, "lengths": lengths}, {"probs": probs, "outputs": outputs}, logits


def bidirectional() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, lengths, emb = tokens()
    (fw, bw), (state_fw, state_bw) = v1.nn.bidirectional_dynamic_rnn(
        rnn_cell.LSTMCell(10), rnn_cell.LSTMCell(10), emb, sequence_length=lengths, dtype=tf.float32)
    tags = v1.layers.dense(tf.concat([fw, bw], 2), 4, name="tags")
    logits, probs = classifier(tf.concat([state_fw.h, state_bw.h, tf.reduce_mean(tags, 1)], 1))
    return {"tokens": ids, "lengths": lengths}, {"probs": probs, "tags": tags}, logits


def peephole_projection() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, lengths, emb = tokens()
    cell = rnn_cell.LSTMCell(12, use_peepholes=True, num_proj=6, cell_clip=0.6, proj_clip=0.25)
    outputs, state = v1.nn.dynamic_rnn(cell, emb, sequence_length=lengths, dtype=tf.float32)
    logits, probs = classifier(tf.concat([state.h, state.c], 1))
    return {"tokens": ids, "lengths": lengths}, {"probs": probs, "outputs": outputs}, logits


def gru() -> tuple[Tensors, Tensors, tf.Tensor]:
    x = v1.placeholder(tf.float32, [None, STEPS, 4], name="x")
    outputs, state = v1.nn.dynamic_rnn(rnn_cell.GRUCell(9), x, dtype=tf.float32)
    logits, probs = classifier(state)
    return {"x": x}, {"probs": probs, "outputs": outputs}, logits


def basic_rnn() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, _, emb = tokens()
    _, state = v1.nn.dynamic_rnn(rnn_cell.BasicRNNCell(11), emb, dtype=tf.float32)
    logits, probs = classifier(state)
    return {"tokens": ids}, {"probs": probs}, logits


def block_cells() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, lengths, emb = tokens()
    lstm, lstm_state = v1.nn.dynamic_rnn(LSTMBlockCell(8, forget_bias=0.8, cell_clip=0.9, use_peephole=True), emb,
                                         dtype=tf.float32, scope="lstm_block")
    _, gru_state = v1.nn.dynamic_rnn(GRUBlockCell(7), lstm, sequence_length=lengths, dtype=tf.float32,
                                     scope="gru_block")
    fused, fused_state = lstm_block_fused(tf.transpose(emb, [1, 0, 2]), 5)
    logits, probs = classifier(tf.concat([lstm_state.c, gru_state, fused_state.h], 1))
    return {"tokens": ids, "lengths": lengths}, {"probs": probs, "fused": fused}, logits


def static_rnn() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, _, emb = tokens()
    cell = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(8), rnn_cell.LSTMCell(6)])
    outputs, (_, top) = v1.nn.static_rnn(cell, tf.unstack(emb, axis=1), dtype=tf.float32)
    logits, probs = classifier(tf.concat([outputs[-1], top.c], 1))
    return {"tokens": ids}, {"probs": probs, "outputs": tf.stack(outputs, 1)}, logits


def unsupported() -> tuple[Tensors, Tensors, tf.Tensor]:
    ids, lengths, emb = tokens()
    start = v1.layers.dense(tf.reduce_mean(emb, 1), 5, name="start")
    _, state = v1.nn.dynamic_rnn(rnn_cell.GRUCell(5), emb, initial_state=start, dtype=tf.float32, scope="given")
    outputs, _ = v1.nn.static_rnn(rnn_cell.GRUCell(5), tf.unstack(emb, axis=1), sequence_length=lengths,
                                  dtype=tf.float32, scope="static")
    residual, _ = v1.nn.dynamic_rnn(rnn_cell.ResidualWrapper(rnn_cell.GRUCell(6)), emb, dtype=tf.float32,
                                    scope="residual")
    logits, probs = classifier(tf.concat([state, outputs[-1], residual[:, -1]], 1))
    return {"tokens": ids, "lengths": lengths}, {"probs": probs}, logits


MODELS: dict[str, Callable[[], tuple[Tensors, Tensors, tf.Tensor]]] = {
    f.__name__: f for f in (final_state, stacked_lengths, bidirectional, peephole_projection, gru, basic_rnn,
                            block_cells, static_rnn, unsupported)}
OPTIMIZERS = {"final_state": "Adam", "stacked_lengths": "RMSProp", "bidirectional": "Adam",
              "peephole_projection": "Momentum", "gru": "Adagrad", "basic_rnn": "GradientDescent",
              "block_cells": "Adam", "static_rnn": "Adam", "unsupported": "Adam"}


def optimizer(name: str) -> v1.train.Optimizer:
    return {"Adam": lambda: v1.train.AdamOptimizer(0.05), "RMSProp": lambda: v1.train.RMSPropOptimizer(0.05),
            "Momentum": lambda: v1.train.MomentumOptimizer(0.2, 0.9), "Adagrad": lambda: v1.train.AdagradOptimizer(0.5),
            "GradientDescent": lambda: v1.train.GradientDescentOptimizer(0.5)}[name]()


def build(out: Path, name: str, rng: np.random.RandomState) -> None:
    """Build model `name`, train it 5 steps on random labels, save it with two shards."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(3)
        inputs, outputs, logits = MODELS[name]()
        labels = v1.placeholder(tf.int64, [None], name="labels")
        v1.losses.sparse_softmax_cross_entropy(labels, logits)
        loss = v1.losses.get_total_loss()
        train = optimizer(OPTIMIZERS[name]).minimize(loss, global_step=v1.train.get_or_create_global_step())
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(5):
                batch = feed(rng, inputs)
                sess.run(train, {**{inputs[k]: v for k, v in batch.items()}, labels: rng.randint(0, CLASSES, ROWS)})
            save_model(out / name, sess, inputs, outputs, [feed(rng, inputs) for _ in range(2)])


if __name__ == "__main__":
    for model in MODELS:
        build(Path(sys.argv[1]), model, np.random.RandomState(0))
