"""Verify's second look at a failing shard: a few rows of its first failing batch run again through both
models with intermediate tensors, to find the first divergent layer (`ferry/divergence.py`).

Layers are matched to TF1 tensors by `auto`'s own record of its translation (node -> the TF1 tensor it
computes), or for a hand-written spec by the variables the name map gave each layer
(`ferry/tf1/correspond.py`). Only failures pay for this, once per failing shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ferry.divergence import FirstDivergence, LayerError, error_of, first_divergence
from ferry.keras3.build import resolved
from ferry.keras3.run import Node, node_values, readable_nodes
from ferry.spec import ModelSpec, Tolerance
from ferry.stages import Reconstructed, Restored
from ferry.tf1.correspond import InferenceGraph
from ferry.tf1.session import Reference

ROWS = 8  # rows of the failing batch run again (out-of-tolerance rows first)
NO_WEIGHTS = "no weights: nothing ties it to a TF1 op"


@dataclass(frozen=True)
class Pair:
    """A Keras node and the TF1 tensor computing the same value; its inputs likewise (TF1 None: unknown)."""

    layer: str
    keras: Any
    tf1: str
    inputs: tuple[tuple[str, Any, str | None], ...]


def locate(spec: ModelSpec, reconstructed: Reconstructed, restored: Restored, tf1: Reference, model,
           batch: dict[str, np.ndarray], where: tuple[int, int], output: str, bad_rows: np.ndarray,
           device: str) -> FirstDivergence:
    """The first divergent layer on failing batch `where` = (shard index, batch index) of output `output`,
    from `ROWS` of its rows (`bad_rows`: those out of tolerance)."""
    tol = spec.verify.tolerance_for(output)
    rows = np.concatenate([np.flatnonzero(bad_rows), np.flatnonzero(~bad_rows)])[:ROWS]
    batch = {name: values[rows] for name, values in batch.items()}
    nodes, not_compared = readable_nodes(resolved(spec, reconstructed), model)
    if spec.architecture == "auto":
        how, (pairs, unmatched) = "auto", _auto_pairs(spec, reconstructed, nodes)
    else:
        how, (pairs, unmatched) = "name map", _named_pairs(spec, restored, tf1, nodes)
    not_compared.update(unmatched)
    found: list[LayerError] = []
    if pairs:
        names = list(dict.fromkeys([p.tf1 for p in pairs] + [t for p in pairs for _, _, t in p.inputs if t]))
        expected = tf1.run_tensors(batch, names)
        tensors = list({id(t): t for p in pairs for t in [p.keras, *(k for _, k, _ in p.inputs)]}.values())
        got = dict(zip(map(id, tensors), node_values(spec, model, tensors, batch, device)))
        found = [_compare(p, got, expected, tf1, tol) for p in pairs]
    return first_divergence(found, not_compared, output=output, shard=where[0], batch=where[1], n_rows=len(rows),
                            tol=tol, correspondence=how)


def _compare(pair: Pair, got: dict[int, np.ndarray], expected: dict[str, Any], tf1: Reference,
             tol: Tolerance) -> LayerError:
    """One pair's row: its output's error and its inputs'."""
    err, ok, why = error_of(got[id(pair.keras)], expected[pair.tf1], tol)
    inputs: dict[str, float | None] = {}
    inputs_ok: list[bool | None] = []
    for name, tensor, tf1_name in pair.inputs:
        in_err, in_ok = (error_of(got[id(tensor)], expected[tf1_name], tol)[:2] if tf1_name else (None, None))
        inputs[name] = in_err
        inputs_ok.append(in_ok if in_err is not None else None)
    known = [e for e in inputs.values() if e is not None]
    row: LayerError = {"layer": pair.layer, "tf1": pair.tf1, "tf1_op": tf1.graph.get_tensor_by_name(pair.tf1).op.type,
                       "max_abs_err": err, "within_tolerance": ok, "inputs": inputs,
                       "inputs_max_abs_err": max(known) if known and len(known) == len(inputs) else None,
                       "inputs_within_tolerance": None if None in inputs_ok or not inputs_ok else all(inputs_ok)}
    if why:
        row["error"] = why
    return row


def _auto_pairs(spec: ModelSpec, reconstructed: Reconstructed, nodes: list[Node]) -> tuple[list[Pair], dict[str, str]]:
    """`auto`: every node that stands for a TF1 op, as the translation recorded it."""
    tensors = reconstructed.get("auto", {}).get("tensors")
    if tensors is None:
        return [], {"(model)": "the translation did not record its TF1 tensors; run reconstruct again "
                               "(`ferry run --force --stage reconstruct`)"}
    known = {**tensors, **spec.source.inputs}
    pairs, unmatched = [], {}
    for node in nodes:
        if node.name not in tensors:
            unmatched[node.name] = "part of a translated op, with no TF1 tensor of its own"
            continue
        pairs.append(Pair(node.name, node.output, tensors[node.name],
                          tuple((name, t, known.get(name)) for name, t in node.inputs)))
    return pairs, unmatched


def _named_pairs(spec: ModelSpec, restored: Restored, tf1: Reference,
                 nodes: list[Node]) -> tuple[list[Pair], dict[str, str]]:
    """A hand-written spec: each layer with weights, matched through the variables the name map gave it."""
    variables = layer_variables(Path(restored["mapping"]))
    graph = InferenceGraph(tf1.graph, list(spec.source.inputs.values()), list(spec.source.outputs.values()))
    pairs, unmatched = [], {}
    for node in nodes:
        if node.layer is None or node.name not in variables:
            unmatched[node.name] = NO_WEIGHTS
            continue
        recurrent = isinstance(node.layer, keras.layers.RNN)  # its `activation` is the cell's, not applied after
        activation = None if recurrent else getattr(getattr(node.layer, "activation", None), "__name__", None)
        found = graph.counterpart(variables[node.name], activation)
        if isinstance(found, str):
            unmatched[node.name] = found
            continue
        tf1_inputs = list(found.inputs) if len(found.inputs) == len(node.inputs) else [None] * len(node.inputs)
        pairs.append(Pair(node.name, node.output, found.output,
                          tuple((name, t, tf1_in) for (name, t), tf1_in in zip(node.inputs, tf1_inputs))))
    return pairs, unmatched


def layer_variables(mapping: Path) -> dict[str, list[str]]:
    """Layer -> the checkpoint keys (TF1 variables) the name map assigned to its weights, from the mapping
    report (a weight path's first component is its layer)."""
    table = json.loads(mapping.read_text())["table"]
    found: dict[str, list[str]] = {}
    for key, status, target in zip(table["key"], table["status"], table["target"]):
        if status != "mapped" or not key or not target:
            continue
        for path in target.split(", "):
            layer = found.setdefault(path.split("/", 1)[0], [])
            if key not in layer:
                layer.append(key)
    return found
