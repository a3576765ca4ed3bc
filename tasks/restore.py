"""Stage 3: read the checkpoint by name, map every key through the name map, assign, report coverage."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tensorflow as tf
from prefect import task
from prefect.cache_policies import NO_CACHE

from ferry.model import build_model, weight_paths
from ferry.namemap import plan_mapping
from ferry.spec import ModelSpec

# Bookkeeping keys TF writes into checkpoints; never model state.
METADATA_KEYS = {"_CHECKPOINTABLE_OBJECT_GRAPH"}


class RestoreError(ValueError):
    """The name map does not restore the model completely and consistently."""


@task(name="restore_weights", cache_policy=NO_CACHE)
def restore_weights(spec: ModelSpec, model_info: dict[str, Any], work: Path) -> dict[str, Any]:
    """Assign checkpoint values to the Keras weights; write mapping.json and the restored weights file."""
    reader = tf.train.load_checkpoint(str(spec.source.checkpoint_prefix))
    shapes = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items() if k not in METADATA_KEYS}
    dtypes = reader.get_variable_to_dtype_map()
    model = build_model(spec, model_info["inputs"])
    weights = weight_paths(model)
    plan = plan_mapping(shapes, {p: tuple(w.shape) for p, w in weights.items()}, spec.name_map)

    for target, key in plan.assignments.items():
        have, want = dtypes[key].name, weights[target].dtype
        if have != want:
            plan.errors.append(f"dtype mismatch: checkpoint key {key!r} is {have}, model weight {target!r} is {want}")
    if not spec.name_map.rules and plan.errors:
        plan.errors.append("the name map has no rules: add e.g. `rules: [{from: '(.*)'}]` to map every "
                           "checkpoint key onto the model weight of the same path")

    work = Path(work)
    report = {"coverage": plan.coverage, "errors": plan.errors, "table": plan.table()}
    (work / "mapping.json").write_text(json.dumps(report, indent=1))
    if plan.errors:
        raise RestoreError(f"{spec.spec_file}: name_map: " + "\n".join(plan.errors))

    for target, key in plan.assignments.items():
        weights[target].assign(reader.get_tensor(key))
    weights_file = work / "restored.weights.h5"
    partial = work / "restored.partial.weights.h5"
    model.save_weights(partial)
    os.replace(partial, weights_file)
    return {"weights": str(weights_file), "mapping": str(work / "mapping.json"), "coverage": plan.coverage}
