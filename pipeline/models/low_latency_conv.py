"""`low_latency_conv` from TensorFlow's speech_commands example: cnn-one-fstride4 of Sainath & Parada 2015.

https://www.isca-speech.org/archive/interspeech_2015/papers/i15_1478.pdf
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import LowLatencyConvSpec


def build(spec: LowLatencyConvSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """One 'VALID' conv spanning all frames (width 8, stride 1x1) -> ReLU -> dense, dense, dense, as TF's code.

    TF's two hidden dense layers have no activation (only dropout between them); kept for parity.
    """
    frames, bins = input_shape
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Reshape((frames, bins, 1), name="to_image")(inputs)
    x = layers.Conv2D(spec.filters, (frames, min(8, bins)), padding="valid", activation="relu", name="conv1")(x)
    x = layers.Dropout(spec.dropout, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(spec.fc_units, name="fc1")(x)
    x = layers.Dropout(spec.dropout, name="dropout2")(x)
    x = layers.Dense(spec.fc_units, name="fc2")(x)
    x = layers.Dropout(spec.dropout, name="dropout3")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
