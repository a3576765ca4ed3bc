"""The TF1 graph's own parsing of serialized tf.Examples, carried into the hand-over.

A graph served on serialized tf.Examples (an Estimator's serving export: `verify.tfrecord.serialized`) is
translated from its parse ops' outputs on, so the Keras model takes parsed features. Its clients send the
records themselves: `parse_function` cuts the graph's ops between the string tensor and the Keras model's
inputs (`ParseExampleV2`, `SparseToDense`, ...: no variables) into a function of their own, which the exported
SavedModel's `serving_default` runs before the model."""

from __future__ import annotations

import tensorflow as tf

from ferry.spec import ModelSpec
from ferry.tf1.formats import READERS
from ferry.tf1.load import load_graph

EXAMPLES = "examples"  # the serialized input's name when the TF1 artifact has no signature naming it (Estimator's)
STATEFUL = {"VariableV2", "VarHandleOp", "Variable", "ReadVariableOp", "Placeholder", "PlaceholderWithDefault",
            "IteratorGetNext", "IteratorV2", "HashTableV2", "MutableHashTableV2"}


def serialized_input_name(spec: ModelSpec) -> str:
    """The name clients send the records under: the TF1 SavedModel signature's key for the string tensor, else
    `examples`."""
    signature = READERS[spec.source.format].signature(spec.source)
    if signature:
        for name, tensor in signature[0].items():
            if tensor == spec.verify.serialized:
                return name
    return EXAMPLES


def parse_ops(graph: tf.Graph, serialized: str, features: dict[str, str]) -> list[tf.Operation]:
    """The ops computing `features` (name -> tensor) from the string tensor `serialized`; a ValueError naming the
    input and the node when one reads anything but the records and constants (a variable, another placeholder, a
    table)."""
    start = graph.get_tensor_by_name(serialized).op
    seen: dict[str, tf.Operation] = {}
    for name, tensor in features.items():  # one walk per input: the one that meets a stateful op is named
        stack = [graph.get_tensor_by_name(tensor).op]
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen[op.name] = op
            if op is start:
                continue
            if op.type in STATEFUL:
                raise ValueError(f"source.inputs.{name}: {tensor!r} is computed from node {op.name} ({op.type}), "
                                 f"not from the serialized tf.Examples alone (verify.tfrecord.serialized: "
                                 f"{serialized!r})")
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return list(seen.values())


def parse_function(spec: ModelSpec):
    """The graph's parsing as a concrete function: serialized tf.Examples (a string vector) -> the Keras model's
    inputs, in `source.inputs` order; a ValueError naming the spec, the input and the node when the records alone
    cannot make them."""
    graph = load_graph(spec.source)
    serialized = spec.verify.serialized
    try:
        ops = {op.name for op in parse_ops(graph, serialized, dict(spec.source.inputs))}
    except ValueError as exc:
        raise ValueError(f"{spec.spec_file}: {exc}") from None
    graph_def = tf.compat.v1.GraphDef()
    graph_def.versions.CopyFrom(graph.graph_def_versions)
    graph_def.node.extend(node for node in graph.as_graph_def().node if node.name in ops)

    def imported():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    return wrapped.prune(feeds=[wrapped.graph.get_tensor_by_name(serialized)],
                         fetches=[wrapped.graph.get_tensor_by_name(t) for t in spec.source.inputs.values()])
