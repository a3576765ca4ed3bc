"""Stage 3: read the checkpoint by name, map every key through the name map, transform, assign, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ferry.cache import fingerprint
from ferry.facts import PARTITION
from ferry.files import write_atomically
from ferry.keras3.build import resolved, weight_paths
from ferry.keras3.run import keep_restored, take_built_model
from ferry.mapping.namemap import CheckpointEntry, MappingPlan, RestoreError, Tensor, plan_mapping
from ferry.mapping.transforms import TransformError, run_transform
from ferry.spec import ModelSpec
from ferry.stages import Inspected, Reconstructed, Restored, WorkDir
from ferry.tf1.facts import graph_refs, resolve
from ferry.tf1.formats import READERS, FormatError, WeightStore
from ferry.tf1.load import load_graph


def checkpoint_tensors(store: WeightStore, variables: list[dict[str, Any]]) -> dict[str, Tensor]:
    """The stored weights (checkpoint keys, or a frozen graph's constants) with shapes and dtypes, in the
    order of the graph's `variables` (the inventory's)."""
    entries = store.entries()
    rank = {v["name"]: i for i, v in enumerate(variables)}
    return {k: entries[k] for k in sorted(entries, key=lambda k: (rank.get(k, len(rank)), k))}


def transform_params(spec: ModelSpec) -> dict[int, dict[str, Any]]:
    """Per rule, its transform params with `{from_graph: SCOPE}` values read from the TF1 graph."""
    rules = {i: r for i, r in enumerate(spec.name_map.rules) if graph_refs(r.transform_params)}
    if not rules:
        return {}
    graph = load_graph(spec.source)
    return {i: {**r.transform_params, **resolve(graph, r.transform_params,
                                                f"{spec.spec_file}: name_map.rules[{i}].transform")}
            for i, r in rules.items()}


def _read(store: WeightStore, entry: CheckpointEntry) -> np.ndarray:
    try:
        parts = [store.read(key) for key in entry.read]
    except FormatError as exc:
        raise RestoreError(str(exc)) from None
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def check_belongs(checkpoint: dict[str, Tensor], variables: list[dict[str, Any]], spec: ModelSpec) -> None:
    """Raise when the checkpoint holds almost none of the graph's inference variables (by name and shape,
    a partition `X/part_N` by its own or its base name): it was written by another model, and no name-map
    rule could fix that."""
    variables = [v for v in variables if not v["training_only"]] or variables

    def found(v: dict[str, Any]) -> bool:
        key = v["name"]
        if key in checkpoint:
            return list(checkpoint[key].shape) == v["shape"]
        return (part := PARTITION.fullmatch(key)) is not None and part.group(1) in checkpoint

    present = [v for v in variables if found(v)]
    if variables and len(present) < len(variables) / 2:
        missing = [v["name"] for v in variables if not found(v)]
        raise RestoreError(
            f"{spec.spec_file}: source.checkpoint: {spec.source.checkpoint_prefix} does not belong to the graph "
            f"{spec.source.artifact.name}: only {len(present)} of its {len(variables)} variables are in it with the "
            f"same name and shape (missing e.g. {', '.join(missing[:3])}). Point source.checkpoint at this "
            "graph's checkpoint.")


def execute(plan: MappingPlan, store: WeightStore, weights: dict[str, Any]) -> list[str]:
    """Assign every planned step; return the errors of steps whose transform refused its inputs.

    The weights are only saved when no step of the plan failed, so a partial assignment never leaves
    this stage."""
    errors = []
    for step in plan.assignments:
        arrays = [_read(store, s) for s in step.sources]
        shapes = [tuple(weights[t].shape) for t in step.targets]
        try:
            values = run_transform(step.transform, arrays, shapes, step.params) if step.transform else arrays
        except TransformError as exc:
            errors.append(f"name_map.{step.rule}: {exc}")
            continue
        for target, value in zip(step.targets, values):
            weights[target].assign(np.asarray(value).astype(weights[target].dtype))
    return errors


def _counted(errors: list[str]) -> list[str]:
    """Each distinct error once, in order, with how often it occurred (`... (x3)`)."""
    counts = dict.fromkeys(errors, 0)
    for error in errors:
        counts[error] += 1
    return [e if n == 1 else f"{e} (x{n})" for e, n in counts.items()]


def restore_weights(spec: ModelSpec, reconstructed: Reconstructed, inspected: Inspected, work: WorkDir) -> Restored:
    """Assign checkpoint values to the Keras weights; write the mapping report and the restored weights."""
    variables = json.loads(Path(inspected["inventory"]).read_text())["variables"]
    try:
        store = READERS[spec.source.format].weights(spec.source, load_graph(spec.source))
    except FormatError as exc:
        raise RestoreError(f"{spec.spec_file}: source: {exc}") from None
    checkpoint = checkpoint_tensors(store, variables)
    check_belongs(checkpoint, variables, spec)
    model = take_built_model(spec, reconstructed)
    original, spec = spec, resolved(spec, reconstructed)  # `auto`: the rules derived from the graph
    weights = weight_paths(model)
    plan = plan_mapping(checkpoint, {p: Tensor(tuple(w.shape), w.dtype) for p, w in weights.items()},
                        spec.name_map, transform_params(spec))
    if not spec.name_map.rules and plan.errors:
        plan.errors.append("the name map has no rules: add e.g. `rules: [{from: '(.*)'}]` to map every "
                           "checkpoint key onto the model weight of the same path")
    plan.errors += execute(plan, store, weights)  # transforms check their inputs: report those errors too

    report = {"coverage": plan.coverage, "errors": plan.errors, "suggestions": plan.suggestions,
              "table": plan.table()}
    if fallbacks := reconstructed.get("auto", {}).get("fallback_ops"):  # their weights are bound like any other
        report["fallback_ops"] = fallbacks
    write_atomically(work.mapping, json.dumps(report, indent=1))
    if plan.errors:
        raise RestoreError(f"{spec.spec_file}: name_map: " + "\n".join(_counted(plan.errors)))

    write_atomically(work.weights, model.save_weights, ".tmp.weights.h5")  # Keras insists on the suffix
    keep_restored(original, reconstructed, str(work.weights), model)  # verify and export run this model
    # Both fingerprinted: a later failed attempt overwriting the report uncaches this result.
    return {"weights": str(work.weights), "mapping": str(work.mapping), "coverage": plan.coverage,
            "files": {str(work.weights): fingerprint(work.weights), str(work.mapping): fingerprint(work.mapping)}}
