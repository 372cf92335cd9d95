"""A small classifier on the frozen speech embedding (Lin et al. 2020, https://arxiv.org/abs/2002.01322)."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from pipeline.models.specs import EmbeddingHeadSpec


def build(spec: EmbeddingHeadSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """[T, 96] embeddings -> (optional temporal conv) -> mean + max over time -> dropout -> dense logits."""
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = inputs
    if spec.head == "conv":
        x = layers.Conv1D(spec.filters, spec.kernel, padding="same", activation="relu",
                          kernel_regularizer=regularizers.L2(spec.l2), name="temporal_conv")(x)  # fmt: skip
    pooled = layers.Concatenate(name="mean_max")(
        [layers.GlobalAveragePooling1D(name="mean")(x), layers.GlobalMaxPooling1D(name="max")(x)]
    )
    pooled = layers.Dropout(spec.dropout, name="dropout")(pooled)
    logits = layers.Dense(num_classes, kernel_regularizer=regularizers.L2(spec.l2), name="logits")(pooled)
    return keras.Model(inputs, logits, name=spec.name)
