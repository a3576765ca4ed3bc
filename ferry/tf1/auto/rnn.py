"""`dynamic_rnn` loops: the while loop behind `Transpose(TensorArrayGatherV3)` becomes one Keras LSTM or
GRU layer over all steps (see `fusions.py`), its weights bound through the `lstm`/`gru` transforms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from ferry.facts import VARIABLE_OPS, is_optimizer_slot
from ferry.tf1.auto.registry import Unsupported, layer_name
from ferry.tf1.facts import lstm_forget_bias

if TYPE_CHECKING:
    from ferry.tf1.auto.core import Translator


def rnn_output(tr: Translator, op: tf.Operation) -> tf.Operation | None:
    """The `TensorArrayGatherV3` collecting a dynamic_rnn's outputs, when `op` is the `Transpose` of it."""
    gathered = tr.resolve(op.inputs[0]).op
    return gathered if gathered.type == "TensorArrayGatherV3" else None


def dynamic_rnn(tr: Translator, op: tf.Operation, gathered: tf.Operation) -> str:
    """`dynamic_rnn` with one TF1 LSTMCell/BasicLSTMCell/GRUCell -> Keras LSTM/GRU (all steps)."""
    scope = op.name.rsplit("/", 1)[0]
    x = tr.graph.get_operation_by_name(f"{scope}/transpose").inputs[0]
    variables = sorted(v.name for v in tr.graph.get_operations()
                       if v.type in VARIABLE_OPS and v.name.startswith(scope + "/"))
    kernels = [v for v in variables if v.endswith("/kernel") and not v.endswith(("gates/kernel", "candidate/kernel"))]
    gates = [v for v in variables if v.endswith("/gates/kernel")]
    if len(kernels) + len(gates) != 1:
        raise Unsupported("dynamic_rnn(cell)", op.name)
    if gates:
        cell = gates[0].removesuffix("/gates/kernel")
        parts = ["gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"]
        units = tr.graph.get_operation_by_name(f"{cell}/candidate/bias").outputs[0].shape.as_list()[0]
        config, keras_cell, transform = {"class": "GRU", "reset_after": False}, "gru_cell", "gru"
    else:
        cell = kernels[0].removesuffix("/kernel")
        parts = ["kernel", "bias"]
        units = tr.graph.get_operation_by_name(f"{cell}/bias").outputs[0].shape.as_list()[0] // 4
        config, keras_cell = {"class": "LSTM"}, "lstm_cell"
        transform = {"lstm": {"forget_bias": lstm_forget_bias(tr.graph, cell)}}
    extra = [v for v in variables if v.startswith(cell + "/") and v.removeprefix(cell + "/") not in parts
             and not is_optimizer_slot(v)]
    if extra:
        raise Unsupported("dynamic_rnn(cell with " + ", ".join(extra) + ")", op.name)
    name = layer_name(cell)
    tr.out.rules.append({"from": cell, "to": f"{name}/{keras_cell}", "match": "exact", "transform": transform})
    return tr.add(name, [tr.node(x)], **config, units=units, return_sequences=True)
