"""Stage 1: inventory of the TF1 artifact (inputs, outputs, ops, variables, training-only parts) and the
serving signature: the spec's, or a SavedModel's own."""

from __future__ import annotations

import json

import tensorflow as tf

from ferry.cache import fingerprint
from ferry.files import write_atomically
from ferry.spec import ModelSpec
from ferry.stages import Inspected, WorkDir
from ferry.tf1.formats import READERS
from ferry.tf1.inventory import build_inventory, placeholder_ancestors
from ferry.tf1.load import load_graph


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
    if spec.verify.serialized is not None:
        check_serialized(spec, inputs)
    write_atomically(work.inventory, json.dumps(inventory, indent=1))
    return {"inventory": str(work.inventory), "inputs": inputs, "outputs": outputs,
            "files": {str(work.inventory): fingerprint(work.inventory)}}


def check_serialized(spec: ModelSpec, inputs: dict[str, str]) -> None:
    """`verify.tfrecord.serialized` is a string tensor of the graph, and every serving input is computed from it
    (by the graph's parse ops); a ValueError naming the node otherwise."""
    graph, name = load_graph(spec.source), spec.verify.serialized
    field = f"{spec.spec_file}: verify.tfrecord.serialized"
    strings = sorted(op.outputs[0].name for op in graph.get_operations()
                     if op.type == "Placeholder" and op.outputs[0].dtype == tf.string)
    try:
        tensor = graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        raise ValueError(f"{field}: no tensor {name!r} in the graph (its string placeholders: {strings})") from None
    if tensor.dtype.base_dtype != tf.string:
        raise ValueError(f"{field}: node {tensor.op.name} ({tensor.op.type}) holds {tensor.dtype.name} values, not "
                         f"the serialized tf.Examples of a string tensor (the graph's string placeholders: {strings})")
    for serving, input_name in inputs.items():
        if tensor.op.name not in placeholder_ancestors(graph.get_tensor_by_name(input_name).op, {tensor.op.name}):
            raise ValueError(f"{spec.spec_file}: source.inputs.{serving}: {input_name!r} is not computed from "
                             f"{name!r} (verify.tfrecord.serialized): the Keras model's inputs are what the graph's "
                             "parse ops make of the records, e.g. 'ParseExample/ParseExampleV2:0'")
