"""Stage 2: build the Keras model from the spec, its input shapes taken from the TF1 graph's inputs."""

from __future__ import annotations

from typing import Any

from ferry.keras3.build import check_architecture, layer_names, weight_paths
from ferry.keras3.run import built_model
from ferry.spec import ModelSpec, SpecError
from ferry.stages import InputSignature, Inspected, Reconstructed
from ferry.tf1.auto import translate
from ferry.tf1.facts import graph_refs, resolve
from ferry.tf1.load import load_graph


def input_signature(spec: ModelSpec) -> dict[str, InputSignature]:
    """Serving input name -> {shape without batch, dtype}: the spec's shapes, else the fed tensor's (a
    placeholder, or any tensor the graph is cut at, e.g. an Estimator's `IteratorGetNext:0`)."""
    graph = load_graph(spec.source)
    overrides = (spec.architecture.input_shapes if spec.architecture != "auto" else None) or {}
    signature: dict[str, InputSignature] = {}
    for serving, name in spec.source.inputs.items():
        tensor = graph.get_tensor_by_name(name)
        shape = overrides.get(serving) or (tensor.shape.as_list() if tensor.shape.rank else [None])[1:]
        signature[serving] = {"shape": list(shape), "dtype": tensor.dtype.base_dtype.name}
    return signature


def graph_values(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """Layer name -> the arguments its spec reads from the TF1 graph (`{from_graph: SCOPE}`), resolved."""
    arch = spec.architecture
    if arch == "auto":  # values are read while translating
        return {}
    if arch.layers:
        named = [(f"architecture.layers[{i}]", name, layer.config)
                 for i, (layer, name) in enumerate(zip(arch.layers, layer_names(arch.layers)))]
    elif arch.graph:
        named = [(f"architecture.graph.nodes[{i}]", n.name, n.config) for i, n in enumerate(arch.graph.nodes)]
    else:
        named = []
    named = [item for item in named if graph_refs(item[2])]
    if not named:
        return {}
    graph = load_graph(spec.source)
    return {name: resolve(graph, config, f"{spec.spec_file}: {where}") for where, name, config in named}


def reconstruct(spec: ModelSpec, inspected: Inspected) -> Reconstructed:
    """Build the model to check it (kept for restore); return its input signature, graph values and weight
    shapes."""
    problems = check_architecture(spec)  # what `ferry validate` says, as it says it
    if problems:
        raise SpecError(problems)
    info: dict[str, Any] = {"inputs": input_signature(spec), "graph_values": graph_values(spec)}
    if spec.architecture == "auto":
        derived = translate(load_graph(spec.source), spec.source.inputs, spec.source.outputs,
                            str(spec.source.artifact))
        info["auto"] = {"architecture": derived.architecture(), "rules": derived.rules, "tensors": derived.tensors,
                        "fallback_ops": derived.fallbacks}
    model = built_model(spec, info)  # kept for restore, in this process
    weights = {path: {"shape": list(w.shape), "dtype": w.dtype} for path, w in weight_paths(model).items()}
    return {**info, "weights": weights, "params": int(model.count_params())}
