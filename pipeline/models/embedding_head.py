"""A small classifier on the frozen speech embedding (Lin et al. 2020, https://arxiv.org/abs/2002.01322)."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from pipeline.models.specs import EmbeddingHeadSpec


def build(spec: EmbeddingHeadSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """[T, 96] embeddings -> (optional temporal conv) -> mean + max over time -> dropout -> dense logits.

    With `spec.heads` > 1, that many such heads (own initialisation and dropout masks) see the same input and
    their logits are averaged: an ensemble inside one exported model (each head is ~32 k parameters)."""
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    if spec.heads == 1:
        return keras.Model(inputs, _head(spec, inputs, num_classes, ""), name=spec.name)
    logits = [_head(spec, inputs, num_classes, f"_{i}") for i in range(spec.heads)]
    return keras.Model(inputs, layers.Average(name="logits")(logits), name=spec.name)


def _head(spec: EmbeddingHeadSpec, x, num_classes: int, suffix: str):
    if spec.head == "conv":
        x = layers.Conv1D(spec.filters, spec.kernel, padding="same", activation="relu",
                          kernel_regularizer=regularizers.L2(spec.l2), name=f"temporal_conv{suffix}")(x)  # fmt: skip
    pooled = layers.Concatenate(name=f"mean_max{suffix}")(
        [layers.GlobalAveragePooling1D(name=f"mean{suffix}")(x), layers.GlobalMaxPooling1D(name=f"max{suffix}")(x)]
    )
    pooled = layers.Dropout(spec.dropout, name=f"dropout{suffix}")(pooled)
    return layers.Dense(num_classes, kernel_regularizer=regularizers.L2(spec.l2), name=f"logits{suffix}")(pooled)
