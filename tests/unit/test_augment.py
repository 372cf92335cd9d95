"""Seeded augmentation: time shift, background mixing, SpecAugment, the per-step augmenter."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from pipeline.config import FeaturesParams, SpecAugment  # noqa: E402
from pipeline.features.augment import make_augmenter, mix_background, spec_augment, time_shift  # noqa: E402

S = 1000


def _ramp(batch: int) -> np.ndarray:
    return np.tile(np.linspace(0.1, 1.0, S, dtype=np.float32), (batch, 1))


def test_time_shift_moves_and_zero_fills():
    audio = _ramp(64)
    out = time_shift(tf.constant(audio), 100, seed=3).numpy()
    assert out.shape == audio.shape
    shifts = []
    for row_in, row_out in zip(audio, out, strict=True):
        zeros = int((row_out == 0).sum())
        assert zeros <= 100
        if zeros and row_out[0] == 0:  # shifted later: zeros lead
            shift = zeros
            np.testing.assert_array_equal(row_out[shift:], row_in[: S - shift])
        elif zeros:  # shifted earlier: zeros trail
            shift = -zeros
            np.testing.assert_array_equal(row_out[:shift], row_in[-shift:])
        else:
            shift = 0
            np.testing.assert_array_equal(row_out, row_in)
        shifts.append(shift)
    assert min(shifts) < 0 < max(shifts)


def test_time_shift_is_deterministic_per_seed():
    audio = tf.constant(_ramp(16))
    a = time_shift(audio, 200, seed=(7, 1)).numpy()
    np.testing.assert_array_equal(a, time_shift(audio, 200, seed=(7, 1)).numpy())
    assert not np.array_equal(a, time_shift(audio, 200, seed=(7, 2)).numpy())
    np.testing.assert_array_equal(time_shift(audio, 0, seed=1).numpy(), audio.numpy())


def test_mix_background_frequency_and_volume():
    audio = tf.zeros([4000, S])
    noise = tf.ones([5 * S])  # every excerpt is all ones, so each row equals its volume
    out = mix_background(audio, noise, frequency=0.3, max_volume=0.2, seed=5).numpy()
    volumes = out[:, 0]
    np.testing.assert_array_equal(out, np.repeat(volumes[:, None], S, axis=1))
    used = volumes > 0
    assert abs(used.mean() - 0.3) < 0.04
    assert volumes.max() <= 0.2
    assert abs(volumes[used].mean() - 0.1) < 0.01  # uniform(0, 0.2)


def test_mix_background_excerpts_and_clips():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, 3 * S).astype(np.float32)
    audio = tf.fill([200, S], 0.95)
    out = mix_background(audio, noise, frequency=1.0, max_volume=1.0, seed=9).numpy()
    assert out.max() <= 1.0 and out.min() >= -1.0
    assert (out == 1.0).any()  # clipped somewhere
    quiet = mix_background(tf.zeros([50, S]), noise, 1.0, 0.05, seed=9).numpy()
    assert np.abs(quiet).max() <= 0.05
    short = mix_background(tf.zeros([4, S]), noise[: S // 3], 1.0, 0.5, seed=1).numpy()  # noise shorter than a clip
    assert short.shape == (4, S) and (np.abs(short) > 0).mean() > 0.9


def test_mix_background_silence_always_gets_noise_and_is_deterministic():
    audio = tf.zeros([500, S])
    silence = tf.constant([True] * 250 + [False] * 250)
    out = mix_background(audio, tf.ones([S]), 0.0, 0.1, seed=2, is_silence=silence).numpy()
    assert (out[:250, 0] > 0).all() and (out[250:] == 0).all()
    assert out[:250, 0].max() > 0.5  # silence volume is uniform(0, 1), not capped at max_volume
    again = mix_background(audio, tf.ones([S]), 0.0, 0.1, seed=2, is_silence=silence).numpy()
    np.testing.assert_array_equal(out, again)


def _masked_runs(mask_1d: np.ndarray) -> list[int]:
    """Lengths of contiguous True runs."""
    padded = np.concatenate([[0], mask_1d.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(edges[1::2] - edges[::2])


def test_spec_augment_time_masks():
    params = SpecAugment(enabled=True, time_masks=1, time_mask_frames=10, frequency_masks=0)
    features = tf.ones([1000, 98, 40])
    out = spec_augment(features, params, seed=4, mask_value=0.0).numpy()
    counts = []
    for clip in out:
        rows = (clip == 0).all(axis=1)
        assert ((clip == 0) == rows[:, None]).all()  # whole rows only, nothing else touched
        runs = _masked_runs(rows)
        assert len(runs) <= 1 and all(r <= 10 for r in runs)
        counts.append(int(rows.sum()))
    assert set(counts) == set(range(11))  # widths uniform over 0..10
    assert abs(np.mean(counts) - 5.0) < 0.5


def test_spec_augment_frequency_masks_and_mean_fill():
    params = SpecAugment(enabled=True, time_masks=0, frequency_masks=2, frequency_mask_bins=5)
    rng = np.random.default_rng(1)
    features = rng.normal(3.0, 1.0, (300, 98, 40)).astype(np.float32)
    out = spec_augment(tf.constant(features), params, seed=8).numpy()
    for clip_in, clip_out in zip(features, out, strict=True):
        changed = clip_in != clip_out
        cols = changed.all(axis=0)
        assert (changed == cols[None, :]).all()  # whole columns only
        assert cols.sum() <= 10 and len(_masked_runs(cols)) <= 2
        np.testing.assert_allclose(clip_out[:, cols], clip_in.mean(), rtol=1e-5)
    both = SpecAugment(enabled=True, time_masks=2, frequency_masks=2)
    a = spec_augment(tf.constant(features), both, seed=(1, 2)).numpy()
    np.testing.assert_array_equal(a, spec_augment(tf.constant(features), both, seed=(1, 2)).numpy())
    assert not np.array_equal(a, spec_augment(tf.constant(features), both, seed=(1, 3)).numpy())


def test_make_augmenter_is_reproducible_per_step_and_works_in_tf_data():
    p = FeaturesParams(time_shift_ms=10.0, background_frequency=0.5, background_volume=0.1)
    noise = np.random.default_rng(0).uniform(-1, 1, 3 * p.clip_samples).astype(np.float32)
    augment = make_augmenter(p, noise, seed=11)
    audio = tf.constant(np.tile(np.linspace(-0.5, 0.5, p.clip_samples, dtype=np.float32), (8, 1)))
    step3 = augment(audio, 3).numpy()
    assert step3.shape == (8, p.clip_samples)
    np.testing.assert_array_equal(step3, augment(audio, 3).numpy())
    assert not np.array_equal(step3, augment(audio, 4).numpy())
    assert not np.array_equal(step3, make_augmenter(p, noise, seed=12)(audio, 3).numpy())

    dataset = tf.data.Dataset.from_tensors(audio).repeat(5).enumerate().map(lambda step, batch: augment(batch, step))
    batches = [b.numpy() for b in dataset]
    np.testing.assert_array_equal(batches[3], step3)
