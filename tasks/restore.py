"""Stage 3: read the checkpoint by name, map every key through the name map, transform, assign, report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ferry.cache import fingerprint
from ferry.graph_facts import graph_refs, resolve
from ferry.inventory import load_graph
from ferry.model import model_from_info, resolved, weight_paths
from ferry.paths import write_atomically
from ferry.namemap import MappingPlan, RestoreError, Source, Tensor, plan_mapping
from ferry.spec import ModelSpec
from ferry.transforms import TransformError, run_transform

# Bookkeeping keys TF writes into checkpoints; never model state.
METADATA_KEYS = {"_CHECKPOINTABLE_OBJECT_GRAPH"}


def checkpoint_tensors(reader, inventory_path: Path | None) -> dict[str, Tensor]:
    """Checkpoint keys with shapes and dtypes, in graph order where the inventory knows it."""
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    order: list[str] = []
    if inventory_path and inventory_path.exists():
        order = [v["name"] for v in json.loads(inventory_path.read_text())["variables"]]
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted((k for k in shapes if k not in METADATA_KEYS), key=lambda k: (rank.get(k, len(rank)), k))
    return {k: Tensor(tuple(shapes[k]), dtypes[k].name) for k in keys}


def transform_params(spec: ModelSpec) -> dict[int, dict[str, Any]]:
    """Per rule, its transform params with `{from_graph: SCOPE}` values read from the TF1 graph."""
    rules = {i: r for i, r in enumerate(spec.name_map.rules) if graph_refs(r.transform_params)}
    if not rules:
        return {}
    graph = load_graph(spec.source.meta)
    return {i: {**r.transform_params, **resolve(graph, r.transform_params,
                                                f"{spec.spec_file}: name_map.rules[{i}].transform")}
            for i, r in rules.items()}


def _read(reader, source: Source) -> np.ndarray:
    parts = [reader.get_tensor(key) for key in source.read]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def execute(plan: MappingPlan, reader, weights: dict[str, Any]) -> list[str]:
    """Assign every planned step; return the errors of steps whose transform refused its inputs.

    The weights are only saved when no step of the plan failed, so a partial assignment never leaves
    this stage."""
    errors = []
    for step in plan.assignments:
        arrays = [_read(reader, s) for s in step.sources]
        shapes = [tuple(weights[t].shape) for t in step.targets]
        try:
            values = run_transform(step.transform, arrays, shapes, step.params) if step.transform else arrays
        except TransformError as exc:
            errors.append(f"name_map.{step.rule}: {exc}")
            continue
        for target, value in zip(step.targets, values):
            weights[target].assign(np.asarray(value).astype(weights[target].dtype))
    return errors


def restore_weights(spec: ModelSpec, model_info: dict[str, Any], work: Path | str) -> dict[str, Any]:
    """Assign checkpoint values to the Keras weights; write mapping.json and the restored weights file."""
    work = Path(work)
    reader = tf.train.load_checkpoint(str(spec.source.checkpoint_prefix))
    checkpoint = checkpoint_tensors(reader, work / "inventory.json")
    model = model_from_info(spec, model_info)
    spec = resolved(spec, model_info)  # `auto`: the rules derived from the graph
    weights = weight_paths(model)
    plan = plan_mapping(checkpoint, {p: Tensor(tuple(w.shape), w.dtype) for p, w in weights.items()},
                        spec.name_map, transform_params(spec))
    if not spec.name_map.rules and plan.errors:
        plan.errors.append("the name map has no rules: add e.g. `rules: [{from: '(.*)'}]` to map every "
                           "checkpoint key onto the model weight of the same path")
    plan.errors += execute(plan, reader, weights)  # transforms check their inputs: report those errors too

    report = {"coverage": plan.coverage, "errors": plan.errors, "suggestions": plan.suggestions,
              "table": plan.table()}
    write_atomically(work / "mapping.json", json.dumps(report, indent=1))
    if plan.errors:
        raise RestoreError(f"{spec.spec_file}: name_map: " + "\n".join(plan.errors))

    weights_file = work / "restored.weights.h5"
    partial = work / "restored.partial.weights.h5"
    model.save_weights(partial)
    os.replace(partial, weights_file)
    return {"weights": str(weights_file), "mapping": str(work / "mapping.json"), "coverage": plan.coverage,
            "files": {str(weights_file): fingerprint(weights_file)}}
