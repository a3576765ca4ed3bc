"""Values a spec takes from the TF1 graph instead of writing them down: `{from_graph: SCOPE}`.

Supported: a layer's `epsilon` (the batch-norm op under SCOPE) and a transform's `forget_bias`
(the constant an LSTM cell under SCOPE adds at run time).
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf

from ferry.transforms import batch_norm_epsilon, lstm_forget_bias

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
            raise ValueError(f"{where}.{argument}: from_graph reads only {', '.join(READERS)} (got {argument!r})")
        try:
            values[argument] = float(reader(graph, scope))
        except ValueError as exc:
            raise ValueError(f"{where}.{argument}: {exc}") from None
    return values
