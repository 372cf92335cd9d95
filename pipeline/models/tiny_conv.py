"""`tiny_conv` from TensorFlow's speech_commands example: one strided conv and a dense layer, for microcontrollers."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import TinyConvSpec


def build(spec: TinyConvSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """Conv 10x8 stride 2x2 'SAME' -> ReLU -> dropout -> dense to logits, as TF's create_tiny_conv_model."""
    frames, bins = input_shape
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Reshape((frames, bins, 1), name="to_image")(inputs)
    x = layers.Conv2D(spec.filters, (10, 8), strides=2, padding="same", activation="relu", name="conv1")(x)
    x = layers.Dropout(spec.dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
