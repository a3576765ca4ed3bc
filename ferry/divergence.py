"""The first divergent layer: when an output is out of tolerance, which layer went wrong first.

Verify runs the failing batch again with intermediate tensors on both sides (`tasks/divergence.py`) and
hands the pairs here: each Keras layer's output against the TF1 tensor that computes the same value, and
the same for its inputs, all at the failing output's tolerance. The first layer, in topological order,
whose output is out of tolerance is the first divergence; its inputs' errors say whether the layer itself
is at fault ("inputs fine, output wrong": its weights or arguments) or the divergence starts before it, in
ops without a TF1 counterpart. Numpy only, no TensorFlow: the flow side reads these records.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

import numpy as np

from ferry.parity import compare
from ferry.spec import Tolerance


class LayerError(TypedDict):
    """One compared layer: its output's error and its inputs' (None: an input without a TF1 counterpart)."""

    layer: str  # the Keras layer (or `auto` graph node)
    tf1: str  # the TF1 tensor computing the same value
    tf1_op: str  # that tensor's op type
    max_abs_err: float | None  # None: the values could not be compared (`error` says why)
    within_tolerance: bool
    inputs: dict[str, float | None]  # input (layer or serving input) -> its max abs err
    inputs_max_abs_err: float | None
    inputs_within_tolerance: bool | None
    error: NotRequired[str]


class FirstDivergence(TypedDict):
    """A failing shard's `first_divergence` (in its parity record and in parity.json)."""

    output: str  # the failing output whose tolerance is used
    shard: int  # the shard's index
    batch: int  # index of the failing batch in the shard
    rows: int  # rows of it compared
    atol: float
    rtol: float
    correspondence: str  # how layers were matched to TF1 tensors: `auto` or `name map`
    layer: str | None  # the first divergent layer; None when none was found
    tf1: NotRequired[str]
    tf1_op: NotRequired[str]
    max_abs_err: NotRequired[float]
    inputs: NotRequired[dict[str, float | None]]
    inputs_max_abs_err: NotRequired[float | None]
    verdict: str  # one sentence for people
    compared: list[LayerError]  # in topological order
    not_compared: dict[str, str]  # layer -> why it has no TF1 counterpart


def align(keras: np.ndarray, tf1: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """Both values in the same layout, or why they cannot be compared. A recurrent layer that returns its
    last step only ([batch, units]) is compared with the last step of the TF1 sequence ([batch, time, units]);
    a TF1 tensordot's flattened [batch * time, units] with the Keras [batch, time, units]."""
    if keras.shape == tf1.shape:
        return keras, tf1
    if tf1.ndim == keras.ndim + 1 and tf1.shape[0] == keras.shape[0] and tf1.shape[2:] == keras.shape[1:]:
        return keras, tf1[:, -1]
    if keras.ndim > 2 and tf1.shape == (int(np.prod(keras.shape[:-1])), keras.shape[-1]):
        return keras, tf1.reshape(keras.shape)
    return f"shapes differ: Keras {list(keras.shape)}, TF1 {list(tf1.shape)}"


def error_of(keras: np.ndarray, tf1: np.ndarray | str, tol: Tolerance) -> tuple[float | None, bool, str | None]:
    """(max abs err, within tolerance, why not comparable) of one pair of values (`tf1` may be the
    message of a tensor that could not be fetched)."""
    if isinstance(tf1, str):
        return None, False, tf1
    pair = align(np.asarray(keras), np.asarray(tf1))
    if isinstance(pair, str):
        return None, False, pair
    result = compare(pair[0], pair[1], tol)
    if "max_abs_err" not in result:
        return None, False, result.get("error", "not comparable")
    if result.get("nonfinite", {}).get("mismatched"):
        return float("inf"), False, None
    return result["max_abs_err"], bool(result["passed"]), None


def first_divergence(rows: list[LayerError], not_compared: dict[str, str], *, output: str, shard: int, batch: int,
                     n_rows: int, tol: Tolerance, correspondence: str) -> FirstDivergence:
    """The record: the first compared layer (rows in topological order) out of tolerance, and a verdict."""
    record: FirstDivergence = {"output": output, "shard": shard, "batch": batch, "rows": n_rows, "atol": tol.atol,
                               "rtol": tol.rtol,
                               "correspondence": correspondence, "layer": None, "verdict": "",
                               "compared": rows, "not_compared": not_compared}
    first = next((r for r in rows if r["max_abs_err"] is not None and not r["within_tolerance"]), None)
    if first is None:
        if not rows:
            record["verdict"] = ("no Keras layer could be matched to a TF1 tensor"
                                 + (f" ({_reasons(not_compared)})" if not_compared else ""))
        elif not_compared:
            record["verdict"] = (f"all {len(rows)} compared layers are within tolerance: the divergence is in "
                                 f"layers or ops without a TF1 counterpart ({', '.join(list(not_compared)[:6])})")
        else:
            record["verdict"] = f"all {len(rows)} compared layers are within tolerance on the rows compared"
        return record
    record.update(layer=first["layer"], tf1=first["tf1"], tf1_op=first["tf1_op"], max_abs_err=first["max_abs_err"],
                  inputs=first["inputs"], inputs_max_abs_err=first["inputs_max_abs_err"])
    if first["inputs_within_tolerance"]:
        record["verdict"] = ("its inputs are within tolerance, its output is not: look at this layer's weights "
                             "(name map, transforms) and arguments")
    elif first["inputs_within_tolerance"] is None:
        record["verdict"] = "its inputs have no TF1 counterpart to compare: the divergence may start before it"
    else:
        before = [f"{name} ({not_compared[name]})" for name in first["inputs"] if name in not_compared]
        record["verdict"] = (f"its inputs are already out of tolerance (max abs err "
                             f"{_num(first['inputs_max_abs_err'])}): the divergence starts before it, in ops "
                             "without a TF1 counterpart" + (f": {'; '.join(before)}" if before else ""))
    return record


def describe(record: FirstDivergence) -> str:
    """One line for error messages: the layer, its TF1 tensor, the errors, the verdict."""
    if record.get("layer") is None:
        return f"first divergent layer: none found: {record['verdict']}"
    return (f"first divergent layer: {record['layer']!r} (TF1 {record['tf1']}, {record['tf1_op']}): max abs err "
            f"{_num(record['max_abs_err'])}, inputs {_num(record['inputs_max_abs_err'])}; {record['verdict']}")


TABLE_COLUMNS = ("keras_layer", "tf1_tensor", "tf1_op", "max_abs_err", "input_max_abs_err", "within_tolerance")


def table(record: FirstDivergence) -> dict[str, list]:
    """The compared layers as a column-wise table (MLflow `first_divergence.json`)."""
    rows = record["compared"]
    return {"keras_layer": [r["layer"] for r in rows], "tf1_tensor": [r["tf1"] for r in rows],
            "tf1_op": [r["tf1_op"] for r in rows], "max_abs_err": [r["max_abs_err"] for r in rows],
            "input_max_abs_err": [r["inputs_max_abs_err"] for r in rows],
            "within_tolerance": [r["within_tolerance"] for r in rows]}


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.3g}"


def _reasons(not_compared: dict[str, str]) -> str:
    """The distinct reasons, each with one layer."""
    by_reason: dict[str, str] = {}
    for layer, why in not_compared.items():
        by_reason.setdefault(why, layer)
    return "; ".join(f"{layer}: {why}" for why, layer in list(by_reason.items())[:3])
