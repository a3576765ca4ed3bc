"""Keras layers ferry adds for graphs that use a variable outside any standard layer, and which layers
keep a model backend-neutral (`portability`)."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="ferry")
class Weight(keras.layers.Layer):
    """A trainable tensor of fixed shape, as a graph node (its input only places it in the graph).

    TF1 graphs often use a variable directly: a hand-written layer norm's `gamma * x + beta`, a
    learned position table added to embeddings. `Weight` holds such a variable as `<name>/value`.
    """

    def __init__(self, shape: list[int], **kwargs):
        super().__init__(**kwargs)
        self.value_shape = tuple(shape)

    def build(self, input_shape):
        self.value = self.add_weight(shape=self.value_shape, name="value", dtype=self.dtype)

    def call(self, anchor):
        return keras.ops.convert_to_tensor(self.value)

    def compute_output_shape(self, input_shape):
        return self.value_shape

    def get_config(self):
        return {**super().get_config(), "shape": list(self.value_shape)}


# ferry's layers that are written with `keras.ops` only, so they run on every Keras backend (TensorFlow,
# JAX, PyTorch). A layer calling one backend's API (a raw-TF fallback, say) stays out of this set: a
# model using it is exported, but flagged as not portable.
PORTABLE_LAYERS: frozenset[type[keras.layers.Layer]] = frozenset({Weight})


def portability(model: keras.Model) -> dict[str, Any]:
    """Whether `model` is backend-neutral: every layer, nested ones included, is a Keras layer or one of
    `PORTABLE_LAYERS` (a Keras `Lambda` is not: its function may call any backend).

    Returns `portable`, `custom_layers` (the non-Keras layer classes used, `module.Class`) and
    `non_portable` (the classes that make it not portable)."""
    layers = list(model._flatten_layers(include_self=False, recursive=True))  # sublayers too (no public API)
    classes = {type(op) for op in [*layers, *getattr(model, "operations", [])]}
    custom = {cls for cls in classes if not _is_keras(cls)}
    non_portable = {cls for cls in custom if cls not in PORTABLE_LAYERS} | {
        cls for cls in classes if issubclass(cls, keras.layers.Lambda)}
    return {"portable": not non_portable, "custom_layers": sorted(map(_qualified, custom)),
            "non_portable": sorted(map(_qualified, non_portable))}


def _is_keras(cls: type) -> bool:
    return cls.__module__ == "keras" or cls.__module__.startswith("keras.")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
