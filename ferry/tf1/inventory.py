"""Inventory of a TF1 graph: inputs, candidate outputs, ops, variables, training-only parts.

A plain JSON-able dict (`build_inventory`), written by the inspect stage and read by the later ones
through its result; training-only ops come from `ferry.tf1.training`. Candidate outputs are
heuristics: a spec names its outputs explicitly. Its text for people is `ferry.tf1.inventory_text`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import tensorflow as tf

from ferry.facts import PLACEHOLDER_OPS, RESOURCE_VARIABLE_OPS, VARIABLE_OPS, float32
from ferry.spec import Source
from ferry.tf1.formats import weight_constants
from ferry.tf1.load import as_source, load_graph
from ferry.tf1.training import (
    PIPELINE_TYPES,
    Classes,
    Users,
    classify_ops,
    collection_op_names,
    feeds_inference,
    is_training_only,
    training_summary,
    users_of,
    variable_readers,
)

# Ops that are never a model output (structure, bookkeeping, debugging).
NON_OUTPUT_TYPES = PLACEHOLDER_OPS | VARIABLE_OPS | frozenset(
    {"Const", "NoOp", "Assert", "Print", "PrintV2", "Shape", "ShapeN", "Size", "Rank"}
)
# Ops whose output carries only the metadata of their input, not its values.
SHAPE_TYPES = frozenset({"Shape", "ShapeN", "Size", "Rank"})
CONVERSION_ATTRS = (
    "padding", "explicit_paddings", "strides", "data_format", "dilations", "ksize", "epsilon",
    "is_training", "T", "U", "dtype", "DstT", "SrcT", "transpose_a", "transpose_b", "adj_x",
    "adj_y", "axis", "keep_dims", "alpha", "forget_bias",
)


def dtype_name(dtype: Any) -> str:
    """Base dtype name, e.g. `float32` (also for `float32_ref`)."""
    return tf.as_dtype(dtype).base_dtype.name


def shape_list(shape: Any) -> list[int | None] | None:
    """A TensorShape (or proto) as a list with None for unknown dims; None for unknown rank."""
    shape = tf.TensorShape(shape)
    return None if shape.rank is None else shape.as_list()


def _json_attr(value: Any) -> Any:
    """An op attr value as JSON: bytes -> str, dtype -> name, float32 -> shortest decimal."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, tf.DType):
        return dtype_name(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float32(value)  # attrs are float32: 0.001, not 0.0010000000474...
    if isinstance(value, (list, tuple)):
        return [_json_attr(v) for v in value]
    if hasattr(value, "dim"):  # TensorShapeProto
        return shape_list(value)
    return str(value)


def conversion_attrs(op: tf.Operation) -> dict[str, Any]:
    """The attrs that matter for conversion (`CONVERSION_ATTRS`), JSON-able, when present."""
    present = op.node_def.attr
    return {key: _json_attr(op.get_attr(key)) for key in CONVERSION_ATTRS if key in present}


def tensor_ref(tensor: tf.Tensor) -> str:
    """GraphDef-style input name: `op` for output 0, `op:k` otherwise."""
    index = tensor.value_index
    return tensor.op.name if index == 0 else f"{tensor.op.name}:{index}"


def variable_entry(
    var: tf.Operation, read_by: list[str], classes: Classes, trainable: frozenset[str]
) -> dict[str, Any]:
    """One `variables` item: a variable, or a frozen graph's weight constant (kind `constant`)."""
    constant = var.type == "Const"
    return {
        "name": var.name,
        "shape": shape_list(var.outputs[0].shape if constant else var.get_attr("shape")),
        "dtype": dtype_name(var.outputs[0].dtype if constant else var.get_attr("dtype")),
        "kind": "constant" if constant else "resource" if var.type in RESOURCE_VARIABLE_OPS else "reference",
        "trainable": var.name in trainable,
        "training_only": is_training_only(var.name, classes) or not read_by,
        "read_by": read_by,
    }


def placeholder_entry(op: tf.Operation, out: tf.Tensor | None = None) -> dict[str, Any]:
    """One `placeholders` item: a placeholder, or a tensor an input pipeline feeds the model with (an
    Estimator's `IteratorGetNext:0`: `fed_by` names its op type)."""
    out = out if out is not None else op.outputs[0]
    entry = {
        "name": op.name,
        "tensor": out.name,
        "dtype": dtype_name(out.dtype),
        "shape": shape_list(out.shape),
        "has_default": op.type == "PlaceholderWithDefault",
    }
    return entry if op.type in PLACEHOLDER_OPS else {**entry, "fed_by": op.type}


def op_entry(op: tf.Operation) -> dict[str, Any]:
    """One `ops` item."""
    return {
        "name": op.name,
        "type": op.type,
        "inputs": [tensor_ref(t) for t in op.inputs],
        "attrs": conversion_attrs(op),
    }


def is_candidate_output(
    op: tf.Operation, classes: Classes, users: Users, read_ops: set[str]
) -> bool:
    """An inference op with a numeric first output that no inference op uses (see also the
    input-value check in `build_inventory`)."""
    if is_training_only(op.name, classes) or op.type in NON_OUTPUT_TYPES or op.name in read_ops:
        return False
    if not op.outputs or not (op.outputs[0].dtype.is_floating or op.outputs[0].dtype.is_integer):
        return False
    if op.outputs[0].shape.rank == 0:  # a scalar is no per-example output (dynamic_rnn's loop counters, min length)
        return False
    return not any(feeds_inference(u, classes, users) for u in users.get(op.name, []))


def placeholder_ancestors(
    op: tf.Operation, placeholders: set[str], values_only: bool = False
) -> list[str]:
    """Names of the given placeholders that `op` depends on (data edges), sorted. With
    `values_only`, a dependency through `Shape`-like ops (metadata, not values) does not count."""
    found: set[str] = set()
    seen = {op.name}
    stack = [op]
    while stack:
        for tensor in stack.pop().inputs:
            producer = tensor.op
            if producer.name in seen or (values_only and producer.type in SHAPE_TYPES):
                continue
            seen.add(producer.name)
            if producer.name in placeholders:
                found.add(producer.name)
            stack.append(producer)
    return sorted(found)


def output_entry(op: tf.Operation, placeholders: set[str]) -> dict[str, Any]:
    """One `outputs` item; `depends_on` lists the inference placeholders it needs."""
    out = op.outputs[0]
    return {
        "name": op.name,
        "tensor": out.name,
        "op": op.type,
        "dtype": dtype_name(out.dtype),
        "shape": shape_list(out.shape),
        "depends_on": placeholder_ancestors(op, placeholders),
    }


def build_inventory(artifact: Source | str | Path) -> dict[str, Any]:
    """Inventory of a TF1 artifact's graph as a JSON-able dict.

    Keys: `source`, `format` (and `meta` for a .meta source), `placeholders` (with an input pipeline's
    outputs where the model has no placeholders), `outputs` (candidate outputs), `variables` (a frozen
    graph's weight constants), `ops` (inference ops), `op_types` (counts over `ops`), `training_only`
    (per category, see `CATEGORIES`).
    """
    source = as_source(artifact)
    graph = load_graph(source)
    ops = graph.get_operations()
    data_users, users = users_of(graph)
    classes = classify_ops(graph, data_users, users)
    trainable = collection_op_names(graph, tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)

    weights = [op for op in ops if op.type in VARIABLE_OPS] or list(weight_constants(graph).values())
    variables, read_ops = [], set()
    for var in weights:
        readers, reads = variable_readers(var, classes, data_users)
        read_ops.update(op.name for op in reads)
        variables.append(variable_entry(var, [op.name for op in readers], classes, trainable))

    inference = [op for op in ops if not is_training_only(op.name, classes)]
    placeholders = [(op, op.outputs[0]) for op in inference if op.type in PLACEHOLDER_OPS]
    if not placeholders:  # fed by an input pipeline: its outputs that reach the model
        readers = [graph.get_operation_by_name(r) for v in variables for r in v["read_by"]]
        ancestors = {t.name for t in _input_tensors(readers)}
        placeholders = [(op, out) for op in inference if op.type in PIPELINE_TYPES for out in op.outputs
                        if out.name in ancestors]
    placeholder_names = {op.name for op, _ in placeholders}
    outputs = [op for op in inference if is_candidate_output(op, classes, users, read_ops)]
    if placeholder_names:  # an output computes on input values, not only on their shapes
        outputs = [op for op in outputs if placeholder_ancestors(op, placeholder_names, True)]
    counts = Counter(op.type for op in inference)
    return {
        "source": str(source.artifact),
        "format": source.format,
        **({"meta": str(source.meta)} if source.format == "meta" else {}),
        "placeholders": [placeholder_entry(op, out) for op, out in placeholders],
        "outputs": [output_entry(op, placeholder_names) for op in outputs],
        "variables": variables,
        "ops": [op_entry(op) for op in inference],
        "op_types": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "training_only": training_summary(classes),
    }


def _input_tensors(ops: list[tf.Operation]) -> list[tf.Tensor]:
    """Every tensor the ops depend on through data edges."""
    seen: dict[str, tf.Tensor] = {}
    stack = list(ops)
    while stack:
        for tensor in stack.pop().inputs:
            if tensor.name not in seen:
                seen[tensor.name] = tensor
                stack.append(tensor.op)
    return list(seen.values())
