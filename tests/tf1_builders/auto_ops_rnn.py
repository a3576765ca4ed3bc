"""Tiny TF1 graphs using the op types of `auto`'s rnn family (tests/test_auto_ops.py): final states (`Exit`),
time-major outputs (`TensorArrayGatherV3`), a bidirectional RNN's reversals (`ReverseSequence`,
`ReverseV2`), static_rnn's stacked outputs (`Pack`) and contrib's fused cells (`LSTMBlockCell`,
`GRUBlockCell`, `BlockLSTM`), with the cells and options each rnn form takes.

    python tests/tf1_builders/auto_ops_rnn.py OUT

writes `OUT/<case>/` as tests/tf1_builders/auto_ops.py does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from block_cells import GRUBlockCell, LSTMBlockCell, lstm_block_fused  # imports common: TF1 behaviour first
from common import cases_in, tf, v1, write_cases

ROWS, STEPS = 8, 6
Tensors = dict[str, tf.Tensor]
Built = tuple[Tensors, Tensors, dict[str, np.ndarray]]
rnn_cell = v1.nn.rnn_cell


def sequences(rng: np.random.RandomState, width: int = 3) -> tuple[tf.Tensor, np.ndarray]:
    return v1.placeholder(tf.float32, [None, STEPS, width], name="x"), rng.rand(ROWS, STEPS, width).astype(np.float32)


def lengths(rng: np.random.RandomState) -> tuple[tf.Tensor, np.ndarray]:
    """Lengths from 0 to STEPS (a batch holds the extremes)."""
    values = rng.randint(0, STEPS + 1, ROWS).astype(np.int32)
    values[:2] = [0, STEPS]
    return v1.placeholder(tf.int32, [None], name="lengths"), values


def case_final_state(rng: np.random.RandomState) -> Built:
    """dynamic_rnn with an LSTMCell: its outputs and both final states (`Exit`s), as a classifier reads them."""
    x, xs = sequences(rng)
    outputs, state = v1.nn.dynamic_rnn(rnn_cell.LSTMCell(5, forget_bias=0.5), x, dtype=tf.float32)
    return {"x": x}, {"outputs": outputs, "c": state.c, "h": state.h}, {"x": xs}


def case_sequence_length(rng: np.random.RandomState) -> Built:
    """dynamic_rnn with `sequence_length` over a MultiRNNCell of a GRUCell and a BasicRNNCell (relu):
    outputs zero past each length, each cell's state that of its last valid step."""
    x, xs = sequences(rng)
    n, ns = lengths(rng)
    cell = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(4), rnn_cell.BasicRNNCell(3, activation=tf.nn.relu)])
    outputs, (gru, basic) = v1.nn.dynamic_rnn(cell, x, sequence_length=n, dtype=tf.float32)
    return {"x": x, "lengths": n}, {"outputs": outputs, "gru": gru, "basic": basic}, {"x": xs, "lengths": ns}


def case_bidirectional(rng: np.random.RandomState) -> Built:
    """bidirectional_dynamic_rnn with lengths (`ReverseSequence` in and out of the backward half): LSTMCells
    with peepholes, a projection and both clips; outputs concatenated, both final states."""
    x, xs = sequences(rng)
    n, ns = lengths(rng)
    fw, bw = (rnn_cell.LSTMCell(5, use_peepholes=True, num_proj=3, cell_clip=0.4, proj_clip=0.2) for _ in "ab")
    (out_fw, out_bw), (state_fw, state_bw) = v1.nn.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=n,
                                                                             dtype=tf.float32)
    return ({"x": x, "lengths": n}, {"outputs": tf.concat([out_fw, out_bw], 2), "c_fw": state_fw.c, "h_bw": state_bw.h},
            {"x": xs, "lengths": ns})


def case_time_major(rng: np.random.RandomState) -> Built:
    """A time-major bidirectional_dynamic_rnn without lengths (`ReverseV2`; the outputs are the
    `TensorArrayGatherV3`s themselves) of stacked GRUCells, outputs kept apart."""
    x = v1.placeholder(tf.float32, [STEPS, None, 3], name="x")
    fw, bw = (rnn_cell.MultiRNNCell([rnn_cell.GRUCell(4), rnn_cell.GRUCell(2)]) for _ in "ab")
    (out_fw, out_bw), (_, state_bw) = v1.nn.bidirectional_dynamic_rnn(fw, bw, x, time_major=True, dtype=tf.float32)
    outputs = {"fw": out_fw, "bw": out_bw, "bw_0": state_bw[0]}
    return {"x": x}, outputs, {"x": rng.rand(STEPS, ROWS, 3).astype(np.float32)}


def case_static(rng: np.random.RandomState) -> Built:
    """static_rnn with a BasicLSTMCell: the last output, a middle one, c, and the outputs stacked (`Pack`);
    over a time-major sequence unstacked (a GRUCell, outputs stacked on axis 0), and over steps of its own
    (a BasicRNNCell)."""
    x, xs = sequences(rng)
    outputs, state = v1.nn.static_rnn(rnn_cell.BasicLSTMCell(4, forget_bias=0.7), tf.unstack(x, axis=1),
                                      dtype=tf.float32)
    read = {"last": outputs[-1], "third": outputs[2], "c": state.c, "stacked": tf.stack(outputs, 1)}
    time_major, _ = v1.nn.static_rnn(rnn_cell.GRUCell(3), tf.unstack(tf.transpose(x, [1, 0, 2])), dtype=tf.float32,
                                     scope="time_major")
    steps = [x[:, t, :] * float(t + 1) for t in range(STEPS)]
    _, own = v1.nn.static_rnn(rnn_cell.BasicRNNCell(3), steps, dtype=tf.float32, scope="own_steps")
    return {"x": x}, {**read, "time_major": tf.stack(time_major), "own_steps": own}, {"x": xs}


def case_block_cells(rng: np.random.RandomState) -> Built:
    """contrib's fused cells: a static_rnn over a MultiRNNCell of an LSTMBlockCell (peepholes, cell clip) and
    a GRUBlockCell (`LSTMBlockCell`, `GRUBlockCell` ops step by step), and a dynamic_rnn of an LSTMBlockCell
    in its loop."""
    x, xs = sequences(rng)
    cell = rnn_cell.MultiRNNCell([LSTMBlockCell(5, forget_bias=0.3, cell_clip=0.5, use_peephole=True),
                                  GRUBlockCell(4)])
    outputs, (lstm, gru) = v1.nn.static_rnn(cell, tf.unstack(x, axis=1), dtype=tf.float32, scope="static")
    loop, _ = v1.nn.dynamic_rnn(LSTMBlockCell(3), x, dtype=tf.float32, scope="loop")
    return {"x": x}, {"outputs": tf.stack(outputs, 1), "c": lstm.c, "gru": gru, "loop": loop}, {"x": xs}


def case_fused(rng: np.random.RandomState) -> Built:
    """contrib's LSTMBlockFusedCell: one `BlockLSTM` over a time-major sequence, and its last output."""
    x = v1.placeholder(tf.float32, [STEPS, None, 3], name="x")
    outputs, state = lstm_block_fused(x, 5, forget_bias=0.8)
    return {"x": x}, {"outputs": outputs, "h": state.h}, {"x": rng.rand(STEPS, ROWS, 3).astype(np.float32)}


if __name__ == "__main__":
    write_cases(cases_in(globals()), Path(sys.argv[1]))
