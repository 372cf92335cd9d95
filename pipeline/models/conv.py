"""`conv` from TensorFlow's speech_commands example: cnn-trad-fpool3 of Sainath & Parada, Interspeech 2015.

https://www.isca-speech.org/archive/interspeech_2015/papers/i15_1478.pdf
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import ConvSpec


def build(spec: ConvSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """Conv 20x8 -> max-pool 2x2 -> conv 10x4 -> dense, 'SAME' padding, dropout after each ReLU (as TF)."""
    frames, bins = input_shape
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Reshape((frames, bins, 1), name="to_image")(inputs)
    x = layers.Conv2D(spec.filters, (20, 8), padding="same", activation="relu", name="conv1")(x)
    x = layers.Dropout(spec.dropout, name="dropout1")(x)
    x = layers.MaxPooling2D(2, strides=2, padding="same", name="pool1")(x)
    x = layers.Conv2D(spec.filters, (10, 4), padding="same", activation="relu", name="conv2")(x)
    x = layers.Dropout(spec.dropout, name="dropout2")(x)
    # TF's code has no second max-pool (its docstring diagram shows one): flatten the 10x4 output directly
    x = layers.Flatten(name="flatten")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
