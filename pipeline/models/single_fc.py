"""`single_fc` from TensorFlow's speech_commands example: flatten the features, one dense layer to logits."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import SingleFcSpec


def build(spec: SingleFcSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """[batch, frames, bins] -> logits; frames*bins*classes + classes weights (no dropout, as in TF)."""
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Flatten(name="flatten")(inputs)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
