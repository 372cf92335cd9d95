"""Depthwise-separable CNN (DS-CNN) of "Hello Edge", Zhang et al. 2017, https://arxiv.org/abs/1711.07128."""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import DsCnnSpec


# Keras' default 0.99 leaves the initial moving variance (1.0) dominating for hundreds of steps when the
# true variance is ~0.01, so short trainings predicted one class at inference; 0.9 settles in ~50 steps.
BN_MOMENTUM = 0.9

def build(spec: DsCnnSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """Conv 10x4 stride 2x2 -> `blocks` x (depthwise 3x3, pointwise 1x1, each BN+ReLU) -> average pool -> dense."""
    frames, bins = input_shape
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Reshape((frames, bins, 1), name="to_image")(inputs)
    x = layers.Conv2D(spec.filters, (10, 4), strides=2, padding="same", use_bias=False, name="conv1")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    for i in range(1, spec.blocks + 1):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"block{i}_dw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_dw_bn")(x)
        x = layers.ReLU(name=f"block{i}_dw_relu")(x)
        x = layers.Conv2D(spec.filters, 1, use_bias=False, name=f"block{i}_pw")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"block{i}_pw_bn")(x)
        x = layers.ReLU(name=f"block{i}_pw_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(spec.dropout, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
