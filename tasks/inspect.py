"""Stage 1: inventory of the TF1 graph (inputs, outputs, ops, variables, training-only parts)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from ferry.inventory import build_inventory
from ferry.spec import ModelSpec


@task(name="inspect_graph", cache_policy=NO_CACHE)
def inspect_graph(spec: ModelSpec, work: Path) -> Path:
    """Import the spec's `.meta` into its own graph, check its declared tensors, write inventory.json."""
    inventory = build_inventory(spec.source.meta)
    tensors = {op["name"] for op in inventory["ops"]} | {p["name"] for p in inventory["placeholders"]}
    for section, names in (("inputs", spec.source.inputs), ("outputs", spec.source.outputs)):
        for serving, tensor in names.items():
            if tensor.split(":")[0] not in tensors:
                raise ValueError(f"{spec.spec_file}: source.{section}.{serving}: no op {tensor.split(':')[0]!r} "
                                 f"in the graph's inference part (got {tensor!r})")
    path = Path(work) / "inventory.json"
    path.write_text(json.dumps(inventory, indent=1))
    return path
