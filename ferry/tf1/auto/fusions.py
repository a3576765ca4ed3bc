"""Patterns that need look-ahead, tried in this order before the handler of the op at their root: each
turns several TF1 ops into one layer. A fusion whose `match` returns None leaves the op to its handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ferry.tf1.auto.math import (
    einsum_bias,
    einsum_dense_with_bias,
    gelu,
    gelu_pattern,
    l2_normalize,
    l2_normalize_pattern,
)
from ferry.tf1.auto.nn import LINEAR, linear, tensordot
from ferry.tf1.auto.registry import Fusion
from ferry.tf1.auto.rnn import (
    STATIC_ROOTS,
    dynamic_rnn,
    dynamic_rnn_time_major,
    final_state,
    fused_final,
    fused_state,
    reversed_back,
    reversed_output,
    rnn_output,
    rnn_output_time_major,
    rnn_state,
    static_output,
    static_rnn,
)

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


def _layer_under(tr: Translator, bias_add: tf.Operation) -> tf.Operation | None:
    inner = tr.resolve(bias_add.inputs[0]).op
    return inner if inner.type in LINEAR else None


def _tensordot_under(tr: Translator, bias_add: tf.Operation) -> tuple[tf.Operation, tf.Tensor] | None:
    return tensordot(tr, bias_add.inputs[0])


def _layer_with_bias(tr: Translator, bias_add: tf.Operation, inner: tf.Operation) -> str:
    return linear(tr, inner, bias=bias_add)


def _dense_with_bias(tr: Translator, bias_add: tf.Operation, dot: tuple[tf.Operation, tf.Tensor]) -> str:
    return linear(tr, dot[0], bias=bias_add, x=dot[1])


FUSIONS: tuple[Fusion, ...] = (
    # Conv2D / DepthwiseConv2dNative / MatMul, then BiasAdd: one layer with its bias.
    Fusion("bias of a layer", "BiasAdd", LINEAR, _layer_under, _layer_with_bias),
    # tf.layers.dense on rank > 2: BiasAdd(Reshape(MatMul(Reshape(x)))) -> one Dense applied to x.
    Fusion("tensordot dense", "BiasAdd", frozenset({"Reshape", "MatMul"}), _tensordot_under, _dense_with_bias),
    # dynamic_rnn: Transpose(TensorArrayGatherV3 after the while loop) -> the cells' layers over all steps
    # (rnn.py); time-major: the gather itself; a final state: the loop's Exit.
    Fusion("dynamic_rnn", "Transpose", frozenset({"TensorArrayGatherV3"}), rnn_output, dynamic_rnn),
    # GELU op by op, x * 0.5 * (1 + erf(x / sqrt 2)) or BERT's tanh form, products in any order -> keras.ops.gelu.
    Fusion("gelu", "Mul", frozenset({"Add", "AddV2", "Erf", "Tanh", "RealDiv", "Pow", "Square"}), gelu_pattern, gelu),
    # tf.nn.l2_normalize: x * rsqrt(maximum(sum(square(x)), epsilon)) -> keras.ops.normalize.
    Fusion("l2_normalize", "Mul", frozenset({"Rsqrt", "Maximum", "Sum", "Square"}), l2_normalize_pattern,
           l2_normalize),
    # An einsum with a variable kernel plus a variable bias (BERT's dense_layer_3d/2d) -> one EinsumDense.
    *(Fusion("einsum bias", root, frozenset({"Einsum", "Reshape"}), einsum_bias, einsum_dense_with_bias)
      for root in ("AddV2", "Add", "BiasAdd")),
    Fusion("dynamic_rnn time-major", "TensorArrayGatherV3", frozenset(), rnn_output_time_major,
           dynamic_rnn_time_major),
    Fusion("dynamic_rnn state", "Exit", frozenset(), rnn_state, final_state),
    # bidirectional_dynamic_rnn: its backward half's outputs reversed back -> that layer's, flipped.
    *(Fusion("bidirectional_dynamic_rnn", root, frozenset({"Transpose", "TensorArrayGatherV3"}), reversed_output,
             reversed_back) for root in ("ReverseSequence", "ReverseV2")),
    # contrib's LSTMBlockFusedCell: its final state, the last step of a BlockLSTM's outputs or cell states.
    Fusion("LSTMBlockFusedCell state", "StridedSlice", frozenset({"BlockLSTM"}), fused_state, fused_final),
    # static_rnn: a step's output, the final state, the outputs stacked -> the cell's layer over all steps.
    *(Fusion("static_rnn", root, frozenset(), static_output, static_rnn) for root in STATIC_ROOTS),
)
