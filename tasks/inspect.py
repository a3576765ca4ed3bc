"""Stage 1: inventory of the TF1 graph (inputs, outputs, ops, variables, training-only parts)."""

from __future__ import annotations

import json

from ferry.cache import fingerprint
from ferry.files import write_atomically
from ferry.spec import ModelSpec
from ferry.stages import Inspected, WorkDir
from ferry.tf1.inventory import build_inventory


def inspect_graph(spec: ModelSpec, work: WorkDir) -> Inspected:
    """Read the spec's graph, check its declared tensors, write the inventory."""
    inventory = build_inventory(spec.source.meta)
    tensors = {op["name"] for op in inventory["ops"]} | {p["name"] for p in inventory["placeholders"]}
    for section, names in (("inputs", spec.source.inputs), ("outputs", spec.source.outputs)):
        for serving, tensor in names.items():
            if tensor.split(":")[0] not in tensors:
                raise ValueError(f"{spec.spec_file}: source.{section}.{serving}: no op {tensor.split(':')[0]!r} "
                                 f"in the graph's inference part (got {tensor!r})")
    write_atomically(work.inventory, json.dumps(inventory, indent=1))
    return {"inventory": str(work.inventory), "files": {str(work.inventory): fingerprint(work.inventory)}}
