"""Keras layers ferry adds where a TF1 graph has no standard Keras layer (a variable used directly, TF1's
recurrent-network conventions), and which layers keep a model backend-neutral (`portability`)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


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
PORTABLE_LAYERS: frozenset[type[keras.layers.Layer]] = frozenset(
    {Weight, Pick, MaskedRNN, TF1LSTMCell, TF1LSTM})


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


@keras.saving.register_keras_serializable(package="ferry")
class TF1Resize(keras.layers.Layer):
    """TF1's `ResizeBilinear` / `ResizeNearestNeighbor` (NHWC) in every mode: `align_corners`,
    `half_pixel_centers`, or neither (TF1's legacy default, which Keras' `Resizing` cannot give).

    The source rows and columns and the interpolation weights are computed once from the static input size,
    in float32 as TF's kernels compute them; `call` gathers and interpolates them (`keras.ops` only).
    Bilinear returns float32, as TF1 does; nearest keeps the input's dtype."""

    def __init__(self, size: list[int], interpolation: str = "bilinear", align_corners: bool = False,
                 half_pixel_centers: bool = False, **kwargs):
        super().__init__(**kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"TF1Resize: interpolation {interpolation!r} is not 'bilinear' or 'nearest'")
        self.size, self.interpolation = [int(n) for n in size], interpolation
        self.align_corners, self.half_pixel_centers = align_corners, half_pixel_centers

    def build(self, input_shape):
        if None in input_shape[1:3]:
            raise ValueError(f"TF1Resize {self.name}: the input's height and width must be static, got {input_shape}")
        self.axes = [self._axis(int(n), out) for n, out in zip(input_shape[1:3], self.size)]

    def _axis(self, size: int, out: int) -> tuple[np.ndarray, ...]:
        """Source indices (and, bilinear, upper indices and weights) along one axis of `size` -> `out`."""
        f32 = np.float32
        scale = f32(size - 1) / f32(out - 1) if self.align_corners and out > 1 else f32(size) / f32(out)
        i = np.arange(out, dtype=f32)
        if self.interpolation == "nearest":
            src = (i + f32(0.5)) * scale if self.half_pixel_centers else i * scale
            index = np.sign(src) * np.floor(np.abs(src) + f32(0.5)) if self.align_corners else np.floor(src)
            index = np.minimum(index.astype(np.int64), size - 1)
            return (np.maximum(index, 0).astype("int32"),)
        src = (i + f32(0.5)) * scale - f32(0.5) if self.half_pixel_centers else i * scale
        low = np.floor(src)
        lerp = (src - low).astype(f32)
        lower = np.maximum(low.astype(np.int64), 0).astype("int32")
        upper = np.minimum(np.ceil(src).astype(np.int64), size - 1).astype("int32")
        return lower, upper, lerp

    def call(self, x):
        ops = keras.ops
        (rows, *row_rest), (cols, *col_rest) = self.axes
        if self.interpolation == "nearest":
            return ops.take(ops.take(x, rows, axis=1), cols, axis=2)
        x = ops.cast(x, "float32")
        [bottom_rows, y_lerp], [right, x_lerp] = row_rest, col_rest
        y_lerp = ops.reshape(ops.convert_to_tensor(y_lerp), (1, -1, 1, 1))
        x_lerp = ops.reshape(ops.convert_to_tensor(x_lerp), (1, 1, -1, 1))

        def across(row_values):  # TF's order: left + (right - left) * x_lerp
            left_values = ops.take(row_values, cols, axis=2)
            return left_values + (ops.take(row_values, right, axis=2) - left_values) * x_lerp

        top, bottom = across(ops.take(x, rows, axis=1)), across(ops.take(x, bottom_rows, axis=1))
        return top + (bottom - top) * y_lerp

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[3])

    def compute_output_spec(self, x):
        dtype = "float32" if self.interpolation == "bilinear" else x.dtype
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "interpolation": self.interpolation,
                "align_corners": self.align_corners, "half_pixel_centers": self.half_pixel_centers}


@keras.saving.register_keras_serializable(package="ferry")
class LocalResponseNormalization(keras.layers.Layer):
    """TF1's `tf.nn.local_response_normalization` (`LRN`) over the last axis:
    `x / (bias + alpha * sum(x[..., c - r : c + r + 1] ** 2)) ** beta` (`keras.ops` only)."""

    def __init__(self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5,
                 **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = int(depth_radius), bias, alpha, beta

    def call(self, x):
        ops = keras.ops
        squares = ops.square(x)
        channels = x.shape[-1]
        r = self.depth_radius
        padded = ops.pad(squares, [[0, 0]] * (len(x.shape) - 1) + [[r, r]])
        window = padded[..., 0:channels]
        for k in range(1, 2 * r + 1):
            window = window + padded[..., k:k + channels]
        return x * ops.power(self.bias + self.alpha * window, -self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}



@keras.saving.register_keras_serializable(package="ferry")
class TF1BatchNormalization(keras.layers.BatchNormalization):
    """Keras' `BatchNormalization` (same arguments, weights and training) whose inference computes what TF1's
    `FusedBatchNorm*` kernel does, in its order: `(x - moving_mean) * (rsqrt(moving_variance + epsilon) * gamma)
    + beta`. Keras computes `x * inv + (beta - moving_mean * inv)`, which rounds differently (it cancels where x
    is near the mean): about 1e-7 per layer, which a hundred layers grow past 1e-5 (tf_slim's resnet_v1_101 and
    inception_v3); this order matches TF1 bit for bit there."""

    def call(self, inputs, training=None, mask=None):
        if training and self.trainable:
            return super().call(inputs, training=training, mask=mask)
        ops = keras.ops
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        shape = [1] * len(x.shape)
        shape[self.axis] = x.shape[self.axis]
        factor = ops.rsqrt(ops.cast(self.moving_variance, x.dtype) + self.epsilon)
        if self.scale:
            factor = factor * ops.cast(self.gamma, x.dtype)
        outputs = (x - ops.reshape(ops.cast(self.moving_mean, x.dtype), shape)) * ops.reshape(factor, shape)
        if self.center:
            outputs = outputs + ops.reshape(ops.cast(self.beta, x.dtype), shape)
        return ops.cast(outputs, self.compute_dtype)


PORTABLE_LAYERS = PORTABLE_LAYERS | {TF1Resize, LocalResponseNormalization, TF1BatchNormalization}
