"""Build the Keras 3 model a spec describes; the one place that turns a spec into layers.

Three forms: `layers` (sequential), `graph` (functional DAG of layers and `keras.ops` calls) and
`factory` (a Python function from an allowed module). Layer config values written
`{from_graph: SCOPE}` are facts read from the TF1 graph at reconstruct time and handed in as
`graph_values` (layer name -> {argument: value}).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import keras

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
from ferry.keras3 import layers as ferry_layers
from ferry.spec import Architecture, LayerSpec, ModelSpec, Problem, Rule, factory_allowed
from ferry.tf1.facts import graph_refs

GraphValues = dict[str, dict[str, Any]]

# Keras layers that take their inputs as one list; every other layer takes them positionally.
MERGE_LAYERS = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot"}


class ArchitectureError(ValueError):
    """A spec architecture that Keras cannot build."""


def _snake(class_name: str) -> str:
    """Keras' and TF1's default layer-name stem: `Conv2D` -> `conv2d`, `MaxPooling2D` -> `max_pooling2d`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def layer_names(layers: list[LayerSpec]) -> list[str]:
    """Names for every layer: the spec's, or TF1-style defaults (`conv2d`, `conv2d_1`, …).

    Computed here rather than by Keras' global name counter, so that building a model twice, or
    in two threads at once, yields the same weight paths.
    """
    taken = {layer.name for layer in layers if layer.name}
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        if layer.name:
            names.append(layer.name)
            continue
        base = _snake(layer.class_name)
        while True:
            n = counts.get(base, 0)
            counts[base] = n + 1
            candidate = base if n == 0 else f"{base}_{n}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names.append(candidate)
    return names


def make_layer(class_name: str, config: dict[str, Any], name: str,
               graph_values: dict[str, Any] | None = None) -> keras.layers.Layer:
    """Instantiate one Keras layer; graph references in `config` are replaced by `graph_values`
    (None: validation only, the references are left out)."""
    module, _, short = class_name.rpartition(".")
    cls = getattr(ferry_layers if module == "ferry" else keras.layers, short, None) if module in ("", "ferry") else None
    if cls is None and class_name == "ferry.RawOp":  # calls TensorFlow itself: imported only when used
        from ferry.keras3.raw_op import RawOp as cls
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ArchitectureError(f"unknown Keras layer class {class_name!r}")
    refs = graph_refs(config)
    if graph_values is None:  # validation: the graph is not read; Keras checks the other arguments
        config = {k: v for k, v in config.items() if k not in refs}
    else:
        missing = [k for k in refs if k not in graph_values]
        if missing:
            raise ArchitectureError(f"layer {name!r}: no value read from the graph for {missing}")
        config = {**config, **{k: graph_values[k] for k in refs}}
    try:
        return cls(name=name, **config)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{class_name}({_fmt(config)}): {exc}") from None


def keras_op(name: str) -> Callable[..., Any]:
    """A `keras.ops` function by name."""
    fn = getattr(keras.ops, name, None)
    if not callable(fn) or name.startswith("_"):
        raise ArchitectureError(f"unknown keras.ops function {name!r}")
    return fn


def check_architecture(spec: ModelSpec) -> list[Problem]:
    """Problems only Keras can tell: unknown layer class or op, a bad layer argument, a bad input name."""
    arch, file = spec.architecture, str(spec.spec_file)
    problems: list[Problem] = []
    if arch == "auto":  # derived from the graph at reconstruct time
        return problems
    if arch.layers:
        for i, (layer, name) in enumerate(zip(arch.layers, layer_names(arch.layers))):
            try:
                make_layer(layer.class_name, layer.config, name)
            except ArchitectureError as exc:
                problems.append(Problem(file=file, field=f"architecture.layers[{i}]", message=str(exc),
                                        value=layer.class_name))
    if arch.graph:
        known = set(spec.source.inputs)
        for i, node in enumerate(arch.graph.nodes):
            field = f"architecture.graph.nodes[{i}]"
            missing = [n for n in node.inputs if n not in known]
            if missing and spec.source.inputs:  # a SavedModel's own inputs are known from inspect on
                problems.append(Problem(file=file, field=f"{field}.inputs", message=(
                    "not a spec input or an earlier node"), value=", ".join(missing)))
            known.add(node.name)
            try:
                if node.class_name:
                    make_layer(node.class_name, node.config, node.name)
                else:
                    keras_op(node.op)
            except ArchitectureError as exc:
                problems.append(Problem(file=file, field=field, message=str(exc), value=node.class_name or node.op))
    return problems


BUILDS: Counter[str] = Counter()  # model name -> Keras models built in this process (for tests)
# A `graph`-form model -> its nodes' symbolic outputs by node name (a `keras.ops` node is no layer, so this is
# the one place that knows which tensor it computes); verify reads intermediate outputs through them.
NODE_OUTPUTS: weakref.WeakKeyDictionary[keras.Model, dict[str, Any]] = weakref.WeakKeyDictionary()


def build_model(spec: ModelSpec, inputs: dict[str, dict[str, Any]],
                graph_values: GraphValues | None = None) -> keras.Model:
    """Build the spec's model; `inputs` maps serving name -> {"shape": [...no batch], "dtype": str}."""
    BUILDS[spec.name] += 1
    graph_values = graph_values or {}
    arch = spec.architecture
    tensors = {name: keras.Input(shape=tuple(sig["shape"]), dtype=sig["dtype"], name=name)
               for name, sig in inputs.items()}
    if arch.layers:
        return _sequential(spec, tensors, graph_values)
    values: dict[str, Any] = {}
    if arch.graph:
        outputs = _functional(spec, tensors, graph_values, values)
    else:
        with _naming(spec, f"architecture.factory.function ({arch.factory.function})"):
            outputs = _factory(spec, tensors)
    model = keras.Model(list(tensors.values()) if len(tensors) > 1 else next(iter(tensors.values())),
                        outputs, name=spec.name)
    if values:
        NODE_OUTPUTS[model] = values
    return model


def _sequential(spec: ModelSpec, tensors: dict[str, Any], graph_values: GraphValues) -> keras.Model:
    if len(tensors) != 1:
        raise ArchitectureError(f"{spec.spec_file}: architecture.layers: the `layers` form takes exactly one input, "
                                f"the spec declares {sorted(tensors)}")
    layers = spec.architecture.layers
    model = keras.Sequential(name=spec.name)
    model.add(next(iter(tensors.values())))
    for i, (layer, name) in enumerate(zip(layers, layer_names(layers))):
        with _naming(spec, f"architecture.layers[{i}] ({name})"):
            model.add(make_layer(layer.class_name, layer.config, name, graph_values.get(name, {})))
    return model


def _functional(spec: ModelSpec, tensors: dict[str, Any], graph_values: GraphValues,
                values: dict[str, Any]) -> list[Any]:
    """The graph's nodes applied in order; `values` receives every input's and node's symbolic output."""
    graph = spec.architecture.graph
    values.update(tensors)
    for i, node in enumerate(graph.nodes):
        with _naming(spec, f"architecture.graph.nodes[{i}] ({node.name})"):
            try:
                args = [values[n] for n in node.inputs]
            except KeyError as exc:
                raise ArchitectureError(f"input {exc} is not a spec input or an earlier node") from None
            if node.class_name:
                layer = make_layer(node.class_name, node.config, node.name, graph_values.get(node.name, {}))
                values[node.name] = layer(args) if node.class_name in MERGE_LAYERS else layer(*args)
            else:
                values[node.name] = keras_op(node.op)(*args, *node.args, **node.config)
    return [values[graph.outputs[name]] for name in spec.source.outputs]


@contextlib.contextmanager
def _naming(spec: ModelSpec, field: str) -> Iterator[None]:
    """Errors building one layer or node name the spec file and its field (Keras' own text kept)."""
    try:
        yield
    except (ArchitectureError, TypeError, ValueError, KeyError, IndexError) as exc:
        message = str(exc).strip() or type(exc).__name__
        raise ArchitectureError(f"{spec.spec_file}: {field}: {message}") from None


def _factory(spec: ModelSpec, tensors: dict[str, Any]) -> list[Any]:
    """Call `module:function(inputs, **kwargs)`; it returns the output tensor(s) or a keras.Model."""
    factory = spec.architecture.factory
    if not factory_allowed(factory.module, spec.factory_modules):
        raise ArchitectureError(f"factory module {factory.module!r} is not under the catalogue's factory_modules "
                                f"{list(spec.factory_modules)}")
    fn = _import_factory(spec)
    out = fn(tensors, **factory.kwargs)
    if isinstance(out, keras.Model):
        out = out(list(tensors.values()) if len(tensors) > 1 else next(iter(tensors.values())))
    if isinstance(out, dict):
        missing = sorted(set(spec.source.outputs) - set(out))
        if missing:
            raise ArchitectureError(f"factory {factory.function} returned no outputs {missing}")
        return [out[name] for name in spec.source.outputs]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _import_factory(spec: ModelSpec) -> Callable[..., Any]:
    factory = spec.architecture.factory
    module_name, fn_name = factory.function.split(":")
    folder = str(spec.catalogue_dir) if spec.catalogue_dir else None
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ArchitectureError(f"factory {factory.function}: cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ArchitectureError(f"factory {factory.function}: {module_name} has no function {fn_name!r}")
    return fn


def resolved(spec: ModelSpec, model_info: dict[str, Any]) -> ModelSpec:
    """The spec as built: for `architecture: auto`, with the graph architecture and the name-map rules
    that reconstruct derived from the TF1 graph (the spec's skips, strictness and policies kept)."""
    if spec.architecture != "auto":
        return spec
    derived = model_info["auto"]
    rules = [Rule.model_validate(r) for r in derived["rules"]]
    return spec.model_copy(update={"architecture": Architecture.model_validate(derived["architecture"]),
                                   "name_map": spec.name_map.model_copy(update={"rules": rules})})


def model_from_info(spec: ModelSpec, model_info: dict[str, Any]) -> keras.Model:
    """The spec's model as reconstruct resolved it (inputs, graph values, derived architecture)."""
    return build_model(resolved(spec, model_info), model_info["inputs"], model_info.get("graph_values"))


def weight_paths(model: keras.Model) -> dict[str, keras.Variable]:
    """Model weights keyed by path relative to the model (`dense/kernel`, not `mlp/dense/kernel`)."""
    prefix = f"{model.name}/"
    return {w.path.removeprefix(prefix): w for w in model.weights}


def _fmt(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())
