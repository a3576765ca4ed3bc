"""Keras layers ferry adds where a TF1 graph has no standard Keras layer (a variable used directly, TF1's
recurrent-network conventions), and which layers keep a model backend-neutral (`portability`)."""

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


@keras.saving.register_keras_serializable(package="ferry")
class Pick(keras.layers.Layer):
    """One output of a layer that returns several (an RNN with `return_state`: the sequence or one final
    state), as a graph node of its own."""

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, outputs):
        return outputs[self.index]

    def compute_output_shape(self, input_shape):
        return input_shape[self.index]

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="ferry")
class MaskedRNN(keras.layers.Wrapper):
    """A recurrent layer run as TF1's `dynamic_rnn(..., sequence_length=lengths)`: `call(sequences, lengths)`
    masks the steps at and past each sequence's length, so the final states are those of its last valid
    step and, with the layer's `zero_output_for_mask=True`, the outputs past it are zeros.

    `layer` is a Keras layer, or written as a spec's graph node is: `{"class": "LSTM", "units": 8, ...}`
    (`ferry.TF1LSTM` for ferry's own)."""

    def __init__(self, layer: keras.layers.Layer | dict[str, Any], **kwargs):
        if isinstance(layer, dict):
            args = dict(layer)
            module, _, name = args.pop("class").rpartition(".")
            layer = (globals()[name] if module == "ferry" else getattr(keras.layers, name))(**args)
        super().__init__(layer, **kwargs)

    def build(self, sequences_shape, lengths_shape=None):
        if not self.layer.built:
            self.layer.build(sequences_shape)
        self.built = True

    def call(self, sequences, lengths):
        steps = keras.ops.arange(keras.ops.shape(sequences)[1], dtype="int32")
        lengths = keras.ops.cast(lengths, "int32")
        mask = keras.ops.less(keras.ops.expand_dims(steps, 0), keras.ops.expand_dims(lengths, 1))
        return self.layer.call(sequences, mask=mask)  # not __call__: no Keras mask leaves with the outputs

    def compute_output_shape(self, sequences_shape, lengths_shape=None):
        return self.layer.compute_output_shape(sequences_shape)


@keras.saving.register_keras_serializable(package="ferry")
class TF1LSTMCell(keras.layers.Layer):
    """TF1's `LSTMCell` step where Keras' `LSTMCell` has no equivalent: peepholes, a projection of the
    output (`num_proj`), clipping of the cell state (`cell_clip`) and of the projection (`proj_clip`).

    Keras' layout and gate order (i, f, c, o; TF1's forget bias folded into `bias`, as the `lstm` transform
    writes it): `kernel` [input, 4*units], `recurrent_kernel` [output, 4*units], `bias`; with peepholes
    `w_i_diag`, `w_f_diag`, `w_o_diag` [units]; with a projection `projection_kernel` [units, num_proj].
    States [h, c] as Keras' LSTM (h: the projected output when there is a projection)."""

    def __init__(self, units: int, num_proj: int | None = None, use_peepholes: bool = False,
                 cell_clip: float | None = None, proj_clip: float | None = None, activation: str = "tanh",
                 **kwargs):
        super().__init__(**kwargs)
        self.units, self.num_proj, self.use_peepholes = units, num_proj, use_peepholes
        self.cell_clip, self.proj_clip = cell_clip, proj_clip
        self.activation = keras.activations.get(activation)
        self.output_size = num_proj or units
        self.state_size = [self.output_size, units]

    def build(self, input_shape):
        gates = 4 * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], gates), name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.output_size, gates), name="recurrent_kernel")
        self.bias = self.add_weight(shape=(gates,), name="bias", initializer="zeros")
        if self.use_peepholes:
            self.w_i_diag, self.w_f_diag, self.w_o_diag = (
                self.add_weight(shape=(self.units,), name=name) for name in ("w_i_diag", "w_f_diag", "w_o_diag"))
        if self.num_proj:
            self.projection_kernel = self.add_weight(shape=(self.units, self.num_proj), name="projection_kernel")

    def call(self, inputs, states):
        ops = keras.ops
        h, c = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h, self.recurrent_kernel) + self.bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        if self.use_peepholes:
            i, f = i + self.w_i_diag * c, f + self.w_f_diag * c
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * self.activation(g)
        if self.cell_clip is not None:
            c = ops.clip(c, -self.cell_clip, self.cell_clip)
        if self.use_peepholes:
            o = o + self.w_o_diag * c
        h = ops.sigmoid(o) * self.activation(c)
        if self.num_proj:
            h = ops.matmul(h, self.projection_kernel)
            if self.proj_clip is not None:
                h = ops.clip(h, -self.proj_clip, self.proj_clip)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), **_lstm_options(self)}


@keras.saving.register_keras_serializable(package="ferry")
class TF1LSTM(keras.layers.RNN):
    """`keras.layers.RNN` over a `TF1LSTMCell` (named `lstm_cell`, as in Keras' `LSTM`), configured like
    `keras.layers.LSTM`: the cell's options, then the RNN's (`return_sequences`, `return_state`,
    `go_backwards`, `zero_output_for_mask`, ...)."""

    def __init__(self, units: int, num_proj: int | None = None, use_peepholes: bool = False,
                 cell_clip: float | None = None, proj_clip: float | None = None, activation: str = "tanh",
                 **kwargs):
        cell = TF1LSTMCell(units, num_proj, use_peepholes, cell_clip, proj_clip, activation,
                           dtype=kwargs.get("dtype"), name="lstm_cell")
        super().__init__(cell, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["cell"]
        return {**config, **_lstm_options(self.cell)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _lstm_options(cell: TF1LSTMCell) -> dict[str, Any]:
    return {"units": cell.units, "num_proj": cell.num_proj, "use_peepholes": cell.use_peepholes,
            "cell_clip": cell.cell_clip, "proj_clip": cell.proj_clip,
            "activation": keras.activations.serialize(cell.activation)}


# ferry's layers that are written with `keras.ops` only, so they run on every Keras backend (TensorFlow,
# JAX, PyTorch). A layer calling one backend's API (a raw-TF fallback, say) stays out of this set: a
# model using it is exported, but flagged as not portable.
PORTABLE_LAYERS: frozenset[type[keras.layers.Layer]] = frozenset({Weight, Pick, MaskedRNN, TF1LSTMCell, TF1LSTM})


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
