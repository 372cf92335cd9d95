"""BC-ResNet, broadcasted residual learning for keyword spotting: Kim et al. 2021, https://arxiv.org/abs/2106.04140.

Layout is [batch, time, frequency, channels] (the features' own order), so the paper's "3x1 frequency-wise"
kernels are (1, 3) here and its (2, 1) frequency strides are (1, 2).
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.models.specs import BcResNetSpec

STAGES = ((2, 8, 1, 1), (2, 12, 2, 2), (4, 16, 2, 4), (4, 20, 1, 8))  # blocks, channels/scale, freq stride, dilation


# Keras' default 0.99 leaves the initial moving variance (1.0) dominating for hundreds of steps when the
# true variance is ~0.01, so short trainings predicted one class at inference; 0.9 settles in ~50 steps.
BN_MOMENTUM = 0.9

def _sub_spectral_norm(x, sub_bands: int, name: str):
    """SubSpectral Normalization: BN statistics per (frequency sub-band, channel); plain BN if bands don't divide."""
    _, frames, bins, channels = x.shape
    if sub_bands <= 1 or bins % sub_bands:
        return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)
    width = bins // sub_bands
    x = layers.Reshape((frames, sub_bands, width, channels), name=f"{name}_split")(x)
    x = layers.Permute((1, 3, 2, 4), name=f"{name}_to_bands")(x)
    x = layers.Reshape((frames, width, sub_bands * channels), name=f"{name}_merge")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)
    x = layers.Reshape((frames, width, sub_bands, channels), name=f"{name}_unmerge")(x)
    x = layers.Permute((1, 3, 2, 4), name=f"{name}_from_bands")(x)
    return layers.Reshape((frames, bins, channels), name=f"{name}_join")(x)


def _freq_depthwise(x, stride: int, name: str):
    """Depthwise (1, 3) convolution with `stride` along frequency, padded as 'same' (output bins ceil(bins / stride)).

    TensorFlow's CPU kernel without oneDNN refuses unequal row and column strides ("Current implementation only
    supports equal length strides"), so a stride is applied as TF's 'same' padding for that stride, a stride-1
    'valid' convolution and a 1x1 max pool that keeps every `stride`-th bin: the same outputs, on every CPU."""
    if stride == 1:
        return layers.DepthwiseConv2D((1, 3), padding="same", use_bias=False, name=name)(x)
    bins = x.shape[2]
    total = max((-(-bins // stride) - 1) * stride + 3 - bins, 0)
    x = layers.ZeroPadding2D(((0, 0), (total // 2, total - total // 2)), name=f"{name}_pad")(x)
    x = layers.DepthwiseConv2D((1, 3), padding="valid", use_bias=False, name=name)(x)
    return layers.MaxPooling2D((1, 1), strides=(1, stride), name=f"{name}_stride")(x)


def _block(x, channels: int, stride: int, dilation: int, spec: BcResNetSpec, name: str):
    """BC-ResBlock: 2-D frequency-wise path f2, averaged over frequency, 1-D temporal path f1 broadcast back."""
    transition = x.shape[-1] != channels
    shortcut = x
    if transition:
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_expand")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_expand_bn")(x)
        x = layers.ReLU(name=f"{name}_expand_relu")(x)
    x = _freq_depthwise(x, stride, name=f"{name}_freq")
    x = _sub_spectral_norm(x, spec.sub_bands, name=f"{name}_ssn")
    f2 = x
    y = layers.AveragePooling2D((1, x.shape[2]), name=f"{name}_freq_avg")(x)
    y = layers.DepthwiseConv2D(
        (3, 1), dilation_rate=(dilation, 1), padding="same", use_bias=False, name=f"{name}_time"
    )(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_time_bn")(y)
    y = layers.Activation("swish", name=f"{name}_swish")(y)
    y = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.SpatialDropout2D(spec.dropout, name=f"{name}_dropout")(y)
    merged = [y, f2] if transition else [y, f2, shortcut]
    x = layers.Add(name=f"{name}_add")(merged)  # y is [.., 1, C]: broadcast over frequency
    return layers.ReLU(name=f"{name}_relu")(x)


def build(spec: BcResNetSpec, input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """BC-ResNet-`scale`: conv 5x5 -> 12 BC-ResBlocks in 4 stages -> depthwise 5x5 -> 1x1 conv -> pool -> dense."""
    frames, bins = input_shape
    base = 8 * spec.scale
    inputs = keras.Input(input_shape, dtype="float32", name="features")
    x = layers.Reshape((frames, bins, 1), name="to_image")(inputs)
    x = layers.Conv2D(2 * base, 5, strides=(1, 2), padding="same", use_bias=False, name="head")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    for s, (blocks, width, stride, dilation) in enumerate(STAGES, start=1):
        for b in range(blocks):
            channels = width * spec.scale
            x = _block(x, channels, stride if b == 0 else 1, dilation, spec, name=f"stage{s}_block{b + 1}")
    # the paper's classifier uses no frequency padding here; 'same' keeps small inputs valid (pooled next anyway)
    x = layers.DepthwiseConv2D(5, padding="same", use_bias=False, name="tail_dw")(x)
    x = layers.Conv2D(4 * base, 1, use_bias=False, name="tail_pw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="tail_bn")(x)
    x = layers.ReLU(name="tail_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=spec.name)
