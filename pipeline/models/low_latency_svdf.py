"""`low_latency_svdf` from TensorFlow's speech_commands example: SVDF layer of Nakkiran et al. 2015.

https://research.google/pubs/compressing-deep-neural-networks-using-a-rank-constrained-topology/
"""

from __future__ import annotations

import keras
from keras import layers, ops

from pipeline.models.specs import LowLatencySvdfSpec


@keras.saving.register_keras_serializable(package="kws_pipeline")
class SVDF(layers.Layer):
    """Rank-constrained layer: per-frame feature filters, then per-filter time filters over the last frames."""

    def __init__(self, units: int, rank: int = 2, memory_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.rank, self.memory_size = units, rank, memory_size

    def build(self, input_shape):
        frames, bins = input_shape[1], input_shape[2]
        self.memory_size = self.memory_size or frames
        filters, init = self.units * self.rank, "glorot_uniform"
        self.feature_kernel = self.add_weight(shape=(bins, filters), initializer=init, name="feature_kernel")
        self.time_kernel = self.add_weight(shape=(self.memory_size, filters), initializer=init, name="time_kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        activations = ops.matmul(inputs[:, -self.memory_size :, :], self.feature_kernel)  # [batch, memory, filters]
        filtered = ops.sum(activations * self.time_kernel, axis=1)  # depthwise over time: [batch, filters]
        per_unit = ops.sum(ops.reshape(filtered, (-1, self.units, self.rank)), axis=-1)  # sum the rank outputs
        return per_unit + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rank": self.rank, "memory_size": self.memory_size}


def build(spec: LowLatencySvdfSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """SVDF over all frames -> ReLU -> dense, dense, dense (hidden dense layers linear, as TF's code)."""
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = SVDF(spec.units, spec.rank, name="svdf")(inputs)
    x = layers.ReLU(name="relu")(x)
    x = layers.Dropout(spec.dropout, name="dropout1")(x)
    x = layers.Dense(spec.fc_units, name="fc1")(x)
    x = layers.Dropout(spec.dropout, name="dropout2")(x)
    x = layers.Dense(spec.fc_units, name="fc2")(x)
    x = layers.Dropout(spec.dropout, name="dropout3")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
