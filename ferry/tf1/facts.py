"""Facts read from a TF1 graph that a checkpoint does not hold: a batch norm's epsilon, the forget bias
an LSTM cell adds at run time. `auto` reads them while translating; a spec reads them with
`{from_graph: SCOPE}` instead of writing them down (a layer's `epsilon`, a transform's `forget_bias`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from ferry.facts import VALUE_PASS_OPS, float32
from ferry.mapping.transforms import TransformError


class GraphFactError(TransformError):
    """A fact the graph does not state unambiguously (no such scope, several candidate values)."""

_FUSED_BN = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
_ADD = frozenset({"Add", "AddV2"})


def _variable_op(graph: tf.Graph, name: str) -> tf.Operation | None:
    try:
        return graph.get_operation_by_name(name)
    except (KeyError, ValueError):
        return None


def _reachable(starts: Iterable[tf.Operation], through: frozenset[str]) -> list[tf.Operation]:
    """Ops fed by `starts`, following consumers only through ops of types `through`."""
    seen: dict[str, tf.Operation] = {}
    stack = list(starts)
    while stack:
        op = stack.pop()
        for out in op.outputs:
            for user in out.consumers():
                if user.name not in seen:
                    seen[user.name] = user
                    if user.type in through:
                        stack.append(user)
    return list(seen.values())


def _scalar_const(tensor: tf.Tensor) -> float | None:
    """The value of a scalar float Const behind `tensor` (through Identity/Enter), else None."""
    op = tensor.op
    while op.type in VALUE_PASS_OPS and op.inputs:
        op = op.inputs[0].op
    if op.type != "Const":
        return None
    value = tf.make_ndarray(op.get_attr("value"))
    if value.size != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return float32(value.reshape(()))


def _forget_bias_adds(split: tf.Operation) -> list[float]:
    """Scalar constants added to the f gate (output 2) of an LSTM's four-way Split."""
    found = []
    for add in split.outputs[2].consumers():
        if add.type in _ADD:
            for other in add.inputs:
                value = _scalar_const(other) if other is not split.outputs[2] else None
                if value is not None:
                    found.append(value)
    return found


def lstm_forget_bias(graph: tf.Graph, cell_scope: str) -> float:
    """The forget bias an LSTMCell/BasicLSTMCell with variables under `cell_scope` adds at run time.

    Follows the data from `<cell_scope>/kernel` to the cell's MatMul, its four-way gate Split and
    the Add of a scalar Const to the f gate (split output 2): `rnn/while/lstm_cell/add/y` for an
    LSTMCell in dynamic_rnn, `rnn/while/basic_lstm_cell/Const_1` for a BasicLSTMCell.
    """
    scope = cell_scope.rstrip("/")
    kernel = _variable_op(graph, f"{scope}/kernel")
    if kernel is None:
        raise GraphFactError(f"lstm_forget_bias: no variable {scope}/kernel in the graph "
                             f"(cell scope {scope!r})")
    matmuls = [op for op in _reachable([kernel], VALUE_PASS_OPS) if op.type == "MatMul"]
    gate_ops = _reachable(matmuls, frozenset({"BiasAdd", "Add", "AddV2"}))
    splits = [op for op in gate_ops if op.type == "Split" and op.get_attr("num_split") == 4]
    values = {v for split in splits for v in _forget_bias_adds(split)}
    if len(values) != 1:
        found = "none" if not values else ", ".join(map(str, sorted(values)))
        raise GraphFactError(f"lstm_forget_bias: expected one forget bias constant added to the "
                             f"f gate of the LSTM cell {scope!r}, found {found}")
    return values.pop()


def _fused_epsilons(graph: tf.Graph, scope: str) -> set[float]:
    """Epsilons of the FusedBatchNorm* ops fed by `scope`'s variables or named under `scope`."""
    variables = [op for suffix in ("moving_mean", "moving_variance", "gamma", "beta")
                 if (op := _variable_op(graph, f"{scope}/{suffix}")) is not None]
    ops = [op for op in _reachable(variables, VALUE_PASS_OPS) if op.type in _FUSED_BN]
    ops += [op for op in graph.get_operations()
            if op.type in _FUSED_BN and op.name.startswith(f"{scope}/")]
    return {float32(op.get_attr("epsilon")) for op in ops}


def _unfused_epsilons(graph: tf.Graph, scope: str) -> set[float]:
    """Constants added to `scope/moving_variance`, or `scope/.../batchnorm/add/y` Consts."""
    values = set()
    variance = _variable_op(graph, f"{scope}/moving_variance")
    readers = _reachable([variance], VALUE_PASS_OPS) if variance is not None else []
    adds = [op for op in readers if op.type in _ADD]
    for add in adds:
        values |= {v for t in add.inputs if (v := _scalar_const(t)) is not None}
    for op in graph.get_operations():
        if (op.type == "Const" and op.name.startswith(f"{scope}/")
                and op.name.endswith("batchnorm/add/y")):
            if (value := _scalar_const(op.outputs[0])) is not None:
                values.add(value)
    return values


def batch_norm_epsilon(graph: tf.Graph, scope: str) -> float:
    """The epsilon of the batch norm under `scope` (e.g. `block2/bn2`).

    Read from its FusedBatchNorm/V2/V3 op(s) (two inside a cond when `training` is a tensor), else
    from the unfused form's `<scope>/batchnorm/add/y` constant.
    """
    scope = scope.rstrip("/")
    values = _fused_epsilons(graph, scope) or _unfused_epsilons(graph, scope)
    if len(values) != 1:
        found = "none" if not values else ", ".join(map(str, sorted(values)))
        raise GraphFactError(f"batch_norm_epsilon: expected one epsilon for the batch norm "
                             f"{scope!r} (FusedBatchNorm* op or batchnorm/add/y), found {found}")
    return values.pop()


READERS: dict[str, Callable[[tf.Graph, str], float]] = {
    "epsilon": batch_norm_epsilon,
    "forget_bias": lstm_forget_bias,
}


def graph_refs(config: dict[str, Any]) -> dict[str, str]:
    """The arguments written `{from_graph: SCOPE}`: argument -> TF1 scope."""
    return {k: v["from_graph"] for k, v in config.items() if isinstance(v, dict) and set(v) == {"from_graph"}}


def resolve(graph: tf.Graph, config: dict[str, Any], where: str) -> dict[str, Any]:
    """Read every `{from_graph: SCOPE}` argument of `config` from `graph`; `where` names the spec field."""
    values = {}
    for argument, scope in graph_refs(config).items():
        reader = READERS.get(argument)
        if reader is None:
            raise GraphFactError(f"{where}.{argument}: from_graph reads only {', '.join(READERS)} (got {argument!r})")
        try:
            values[argument] = float(reader(graph, scope))
        except ValueError as exc:
            raise GraphFactError(f"{where}.{argument}: {exc}") from None
    return values
