"""A one-layer transformer encoder classifier, written the Keras way, named for its name map."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="factories")  # so that `<name>.keras` reloads
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned [length, width] position table to every sequence of the batch."""

    def __init__(self, length: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.length, self.width = length, width

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=(self.length, self.width), name="embeddings")

    def call(self, x):
        return x + self.embeddings

    def get_config(self):
        return {**super().get_config(), "length": self.length, "width": self.width}


def encoder(inputs: dict, vocab: int, length: int, width: int, heads: int, ffn: int, classes: int,
            epsilon: float = 1e-6):
    """tokens -> word + position embeddings -> self-attention block -> GELU FFN block -> mean -> softmax."""
    x = keras.layers.Embedding(vocab, width, name="word_embeddings")(inputs["tokens"])
    x = PositionEmbedding(length, width, name="position_embeddings")(x)
    attended = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")(x, x)
    x = keras.layers.LayerNormalization(epsilon=epsilon, name="attention_norm")(x + attended)
    h = keras.layers.Dense(ffn, name="ffn_intermediate")(x)
    h = keras.ops.gelu(h, approximate=True)  # the tanh formula of the original BERT code
    h = keras.layers.Dense(width, name="ffn_output")(h)
    x = keras.layers.LayerNormalization(epsilon=epsilon, name="ffn_norm")(x + h)
    pooled = keras.ops.mean(x, axis=1)
    return {"probs": keras.layers.Dense(classes, activation="softmax", name="classifier")(pooled)}
