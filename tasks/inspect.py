"""Stage 1: inventory of the TF1 artifact (inputs, outputs, ops, variables, training-only parts) and the
serving signature: the spec's, or a SavedModel's own."""

from __future__ import annotations

import json

from ferry.cache import fingerprint
from ferry.files import write_atomically
from ferry.spec import ModelSpec
from ferry.stages import Inspected, WorkDir
from ferry.tf1.formats import READERS
from ferry.tf1.inventory import build_inventory


def inspect_graph(spec: ModelSpec, work: WorkDir) -> Inspected:
    """Read the spec's artifact, check its declared tensors, write the inventory; return the signature."""
    inventory = build_inventory(spec.source)
    declared = READERS[spec.source.format].signature(spec.source)
    inputs = spec.source.inputs or (declared[0] if declared else {})
    outputs = spec.source.outputs or (declared[1] if declared else {})
    tensors = {op["name"] for op in inventory["ops"]} | {p["name"] for p in inventory["placeholders"]}
    for section, names in (("inputs", inputs), ("outputs", outputs)):
        for serving, tensor in names.items():
            if tensor.split(":")[0] not in tensors:
                raise ValueError(f"{spec.spec_file}: source.{section}.{serving}: no op {tensor.split(':')[0]!r} "
                                 f"in the graph's inference part (got {tensor!r})")
    write_atomically(work.inventory, json.dumps(inventory, indent=1))
    return {"inventory": str(work.inventory), "inputs": inputs, "outputs": outputs,
            "files": {str(work.inventory): fingerprint(work.inventory)}}
