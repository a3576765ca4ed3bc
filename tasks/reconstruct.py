"""Stage 2: build the Keras model from the spec, its input shapes taken from the TF1 placeholders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ferry.model import build_model, weight_paths
from ferry.spec import ModelSpec


def input_signature(spec: ModelSpec, inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Serving input name -> {shape without batch, dtype}: the spec's shapes, else the placeholder's."""
    placeholders = {p["tensor"]: p for p in inventory["placeholders"]}
    overrides = spec.architecture.input_shapes or {}
    signature = {}
    for serving, tensor in spec.source.inputs.items():
        placeholder = placeholders.get(tensor)
        if placeholder is None:
            raise ValueError(f"{spec.spec_file}: source.inputs.{serving}: {tensor!r} is not a placeholder of the "
                             f"graph; placeholders: {sorted(placeholders)}")
        shape = overrides.get(serving) or (placeholder["shape"] or [None])[1:]
        signature[serving] = {"shape": list(shape), "dtype": placeholder["dtype"]}
    return signature


@task(name="reconstruct", cache_policy=NO_CACHE)
def reconstruct(spec: ModelSpec, inventory_path: Path) -> dict[str, Any]:
    """Build the model once to check it; return its input signature and weight shapes."""
    inventory = json.loads(Path(inventory_path).read_text())
    inputs = input_signature(spec, inventory)
    model = build_model(spec, inputs)
    weights = {path: list(w.shape) for path, w in weight_paths(model).items()}
    return {"inputs": inputs, "weights": weights, "params": int(model.count_params())}
