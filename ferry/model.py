"""Build the Keras 3 model a spec describes; the one place that turns a spec into layers."""

from __future__ import annotations

import re
from typing import Any

import ferry  # noqa: F401  (TF environment defaults before TensorFlow loads)
import keras

from ferry.spec import LayerSpec, ModelSpec, Problem


class ArchitectureError(ValueError):
    """A layer in the spec that Keras cannot build."""


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


def make_layer(layer: LayerSpec, name: str) -> keras.layers.Layer:
    """Instantiate one Keras layer from its spec entry."""
    cls = getattr(keras.layers, layer.class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
        raise ArchitectureError(f"unknown Keras layer class {layer.class_name!r}")
    try:
        return cls(name=name, **layer.config)
    except (TypeError, ValueError) as exc:
        raise ArchitectureError(f"{layer.class_name}({_fmt(layer.config)}): {exc}") from None


def check_layers(spec: ModelSpec) -> list[Problem]:
    """Problems with the spec's layer list that only Keras can tell (unknown class, bad argument)."""
    problems = []
    for i, (layer, name) in enumerate(zip(spec.architecture.layers, layer_names(spec.architecture.layers))):
        try:
            make_layer(layer, name)
        except ArchitectureError as exc:
            problems.append(Problem(file=str(spec.spec_file), field=f"architecture.layers[{i}]", message=str(exc),
                                    value=layer.class_name))
    return problems


def build_model(spec: ModelSpec, inputs: dict[str, dict[str, Any]]) -> keras.Model:
    """Build the spec's model; `inputs` maps serving name -> {"shape": [...no batch], "dtype": str}."""
    if len(inputs) != 1:
        raise ArchitectureError(f"the `layers` form takes exactly one input, the spec declares {sorted(inputs)}")
    (input_name, sig), = inputs.items()
    layers = spec.architecture.layers
    model = keras.Sequential(name=spec.name)
    model.add(keras.Input(shape=tuple(sig["shape"]), dtype=sig["dtype"], name=input_name))
    for layer, name in zip(layers, layer_names(layers)):
        model.add(make_layer(layer, name))
    return model


def weight_paths(model: keras.Model) -> dict[str, keras.Variable]:
    """Model weights keyed by path relative to the model (`dense/kernel`, not `mlp/dense/kernel`)."""
    prefix = f"{model.name}/"
    return {w.path.removeprefix(prefix): w for w in model.weights}


def _fmt(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())
