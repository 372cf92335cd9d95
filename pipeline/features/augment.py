"""Training-time augmentation as seeded, stateless tf functions over batches (fresh every step, reproducible)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from pipeline.config import FeaturesParams, SpecAugment

SeedLike = int | tuple[int, int] | list[int] | np.ndarray | tf.Tensor
SILENCE_MAX_VOLUME = 1.0  # TF speech_commands: silence clips always get noise at uniform(0, 1)


def as_seed(seed: SeedLike) -> tf.Tensor:
    """A stateless-op seed: shape [2] int64 (a scalar s becomes [s, 0])."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.reshape(seed, [2])


def _split(seed: SeedLike, n: int) -> list[tf.Tensor]:
    """`n` independent seeds derived from one."""
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), num=n))


def derive_seed(seed: int, step: int | tf.Tensor, stream: int = 0) -> tf.Tensor:
    """The seed of one augmentation stream (0: shift, 1: noise, 2: SpecAugment, ...) at one training step."""
    step_seed = tf.stack([tf.constant(int(seed), tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(step_seed, stream)


def time_shift(audio: tf.Tensor, max_shift_samples: int, seed: SeedLike) -> tf.Tensor:
    """Shift each clip by uniform[-max, max] samples (positive = later), filling with zeros."""
    audio = tf.convert_to_tensor(audio, tf.float32)
    if max_shift_samples <= 0:
        return audio
    batch, samples = tf.shape(audio)[0], tf.shape(audio)[1]
    shift = tf.random.stateless_uniform(
        [batch], as_seed(seed), minval=-max_shift_samples, maxval=max_shift_samples + 1, dtype=tf.int32
    )
    source = tf.range(samples)[None, :] - shift[:, None]
    valid = (source >= 0) & (source < samples)
    moved = tf.gather(audio, tf.clip_by_value(source, 0, samples - 1), batch_dims=1)
    return tf.where(valid, moved, tf.zeros_like(moved))


def mix_background(
    audio: tf.Tensor,
    noise: tf.Tensor,
    frequency: float,
    max_volume: float,
    seed: SeedLike,
    is_silence: tf.Tensor | None = None,
) -> tf.Tensor:
    """Add a random excerpt of 1-D `noise` to a `frequency` share of clips at uniform(0, max_volume); clip to [-1, 1].

    Clips marked in `is_silence` always get noise, at uniform(0, 1) as in TF speech_commands.
    """
    audio = tf.convert_to_tensor(audio, tf.float32)
    noise = tf.reshape(tf.convert_to_tensor(noise, tf.float32), [-1])
    batch, samples = tf.shape(audio)[0], tf.shape(audio)[1]
    if noise.shape[0] == 0:
        return audio
    length = tf.shape(noise)[0]
    noise = tf.tile(noise, [samples // length + 1])  # at least one clip long
    offset_seed, use_seed, volume_seed = _split(seed, 3)
    room = tf.cast(tf.shape(noise)[0] - samples + 1, tf.float32)
    offsets = tf.cast(tf.random.stateless_uniform([batch], offset_seed) * room, tf.int32)
    excerpt = tf.gather(noise, offsets[:, None] + tf.range(samples)[None, :])
    used = tf.random.stateless_uniform([batch], use_seed) < frequency
    unit = tf.random.stateless_uniform([batch], volume_seed)
    volume = tf.where(used, unit * max_volume, tf.zeros_like(unit))
    if is_silence is not None:
        volume = tf.where(tf.cast(is_silence, tf.bool), unit * SILENCE_MAX_VOLUME, volume)
    return tf.clip_by_value(audio + excerpt * volume[:, None], -1.0, 1.0)


def _band_mask(batch: tf.Tensor, size: tf.Tensor, masks: int, max_width: int, seed: tf.Tensor) -> tf.Tensor:
    """[batch, size] bool: union of `masks` bands per row, widths uniform[0, max_width], starts uniform."""
    width_seed, start_seed = _split(seed, 2)
    widths = tf.random.stateless_uniform([batch, masks], width_seed, minval=0, maxval=max_width + 1, dtype=tf.int32)
    widths = tf.minimum(widths, size)
    room = tf.cast(size - widths + 1, tf.float32)
    starts = tf.cast(tf.random.stateless_uniform([batch, masks], start_seed) * room, tf.int32)
    index = tf.range(size)[None, None, :]
    inside = (index >= starts[..., None]) & (index < (starts + widths)[..., None])
    return tf.reduce_any(inside, axis=1)


def spec_augment(
    features: tf.Tensor, params: SpecAugment, seed: SeedLike, mask_value: float | None = None
) -> tf.Tensor:
    """SpecAugment time and frequency masks on [B, T, F]; masked cells get `mask_value` (None: the clip's mean)."""
    features = tf.convert_to_tensor(features, tf.float32)
    batch, frames, bins = tf.shape(features)[0], tf.shape(features)[1], tf.shape(features)[2]
    time_seed, freq_seed = _split(seed, 2)
    mask = tf.zeros([batch, frames, bins], tf.bool)
    if params.time_masks > 0:
        rows = _band_mask(batch, frames, params.time_masks, params.time_mask_frames, time_seed)
        mask |= rows[:, :, None] & tf.ones([1, 1, bins], tf.bool)
    if params.frequency_masks > 0:
        cols = _band_mask(batch, bins, params.frequency_masks, params.frequency_mask_bins, freq_seed)
        mask |= cols[:, None, :]
    if mask_value is None:
        fill = tf.broadcast_to(tf.reduce_mean(features, axis=[1, 2], keepdims=True), tf.shape(features))
    else:
        fill = tf.fill(tf.shape(features), tf.constant(mask_value, tf.float32))
    return tf.where(mask, fill, features)


def make_augmenter(p: FeaturesParams, noise: np.ndarray, seed: int) -> Callable[..., tf.Tensor]:
    """fn(audio [B, S], step, is_silence=None) -> shifted + noise-mixed audio, seeded by (seed, step)."""
    max_shift = int(p.sample_rate * p.time_shift_ms / 1000)
    noise_t = tf.constant(np.asarray(noise, dtype=np.float32).reshape(-1))

    def augment(audio: tf.Tensor, step: int | tf.Tensor, is_silence: tf.Tensor | None = None) -> tf.Tensor:
        out = time_shift(audio, max_shift, derive_seed(seed, step, 0))
        if noise_t.shape[0] and (p.background_frequency > 0 or is_silence is not None):
            noise_seed = derive_seed(seed, step, 1)
            out = mix_background(out, noise_t, p.background_frequency, p.background_volume, noise_seed, is_silence)
        return out

    return augment
