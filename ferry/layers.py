"""Keras layers ferry adds for graphs that use a variable outside any standard layer."""

from __future__ import annotations

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
