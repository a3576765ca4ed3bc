"""Stage 1: inventory of the TF1 graph (inputs, outputs, ops, variables, training-only parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from ferry.cache import fingerprint
from ferry.inventory import build_inventory
from ferry.paths import write_atomically
from ferry.spec import ModelSpec


def inspect_graph(spec: ModelSpec, work: Path | str) -> dict[str, Any]:
    """Import the spec's `.meta` into its own graph, check its declared tensors, write inventory.json."""
    inventory = build_inventory(spec.source.meta)
    tensors = {op["name"] for op in inventory["ops"]} | {p["name"] for p in inventory["placeholders"]}
    for section, names in (("inputs", spec.source.inputs), ("outputs", spec.source.outputs)):
        for serving, tensor in names.items():
            if tensor.split(":")[0] not in tensors:
                raise ValueError(f"{spec.spec_file}: source.{section}.{serving}: no op {tensor.split(':')[0]!r} "
                                 f"in the graph's inference part (got {tensor!r})")
    path = Path(work) / "inventory.json"
    write_atomically(path, json.dumps(inventory, indent=1))
    return {"inventory": str(path), "files": {str(path): fingerprint(path)}}
