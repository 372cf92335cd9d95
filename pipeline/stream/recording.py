"""A long, seeded test recording of words over background noise, with its ground truth (TF's streaming test wav).

Like tensorflow/examples/speech_commands/generate_streaming_test_wav.py: whole clips are mixed in at volume 1
with TF's linear ramps (500 samples at 16 kHz) over background noise; each word is `_unknown_` with probability
`unknown_fraction`, otherwise a keyword chosen uniformly (silence clips are never used).

Placement: word k's clip is centred in the slot [k * interval, (k + 1) * interval) and shifted by a uniform
jitter in [-word_jitter_ms, +word_jitter_ms]; clips never overlap and never leave the recording.

Truth convention: `time_ms` is the END of the placed clip (its start offset + the clip length). TF writes the
clip START and stamps each streamed window with its START; we stamp windows with their END (pipeline.stream.run,
as a live stream sees them), so the truth is the clip END. Both are the same alignment shifted by one clip
length: the window that holds exactly the placed clip carries exactly the truth time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import UNKNOWN_LABEL, StreamParams
from pipeline.fileio import atomic_path

TRUTH_COLUMNS = ["label", "time_ms"]


def _as_float(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32)


def _envelope(length: int, sample_rate: int) -> np.ndarray:
    """TF's mix_in_audio_sample envelope: linear ramps in and out (500 samples at 16 kHz)."""
    ramp = max(1, min(round(500 * sample_rate / 16000), length // 2))
    env = np.ones(length, np.float32)
    env[:ramp] = np.arange(ramp) / ramp
    env[length - ramp :] = (ramp - np.arange(ramp)) / ramp
    return env


def _background(noise: np.ndarray, total: int, volume: float, rng: np.random.Generator) -> np.ndarray:
    """`total` samples of `noise`, looped from a random offset, times `volume` (zeros without noise)."""
    noise = _as_float(noise).reshape(-1)
    offset = int(rng.integers(max(noise.size, 1)))  # always drawn: word placement does not depend on the noise
    if noise.size == 0 or volume == 0:
        return np.zeros(total, np.float32)
    return (noise[(offset + np.arange(total)) % noise.size] * np.float32(volume)).astype(np.float32)


def make_recording(
    clips: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    noise: np.ndarray,
    settings: StreamParams,
    sample_rate: int,
    seed: int,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Audio float32 [recording_seconds * sample_rate] in [-1, 1] and its truth (label, time_ms = clip end)."""
    clips = np.asarray(clips)
    labels = np.asarray(labels).reshape(-1)
    if clips.ndim != 2 or clips.shape[0] != labels.shape[0] or clips.shape[1] == 0:
        raise ValueError(f"expected clips [N, S] and labels [N], got {clips.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(label_names)):
        raise ValueError("labels must be indices into label_names")
    clip_len = clips.shape[1]
    clip_ms = clip_len * 1000.0 / sample_rate
    interval, jitter = settings.word_interval_ms, settings.word_jitter_ms
    if interval - clip_ms < 2 * jitter:
        raise ValueError(
            f"word_interval_ms {interval} must be at least the clip ({clip_ms:g} ms) plus twice word_jitter_ms {jitter}"
        )
    total = round(settings.recording_seconds * sample_rate)
    rng = np.random.default_rng(seed)
    audio = _background(noise, total, settings.background_volume, rng)

    n_words = int((total * 1000.0 / sample_rate) // interval)
    keyword_ids = [i for i, name in enumerate(label_names) if not name.startswith("_") and np.any(labels == i)]
    unknown_id = label_names.index(UNKNOWN_LABEL) if UNKNOWN_LABEL in label_names else -1
    is_unknown = rng.random(n_words) < settings.unknown_fraction
    keyword_pick = rng.integers(max(len(keyword_ids), 1), size=n_words)
    clip_pick = rng.random(n_words)
    jitters = rng.uniform(-jitter, jitter, n_words) if jitter > 0 else np.zeros(n_words)
    if is_unknown.any() and not np.any(labels == unknown_id):
        raise ValueError(f"unknown_fraction > 0 needs {UNKNOWN_LABEL} clips")
    if not is_unknown.all() and not keyword_ids:
        raise ValueError("no keyword clips to place")

    word_class = np.where(is_unknown, unknown_id, np.asarray(keyword_ids or [0])[keyword_pick])
    starts_ms = np.arange(n_words) * interval + (interval - clip_ms) / 2 + jitters
    starts = np.clip(np.round(starts_ms * sample_rate / 1000.0).astype(np.int64), 0, total - clip_len)
    pools = {c: np.flatnonzero(labels == c) for c in np.unique(word_class)}
    envelope = _envelope(clip_len, sample_rate)
    for k in range(n_words):
        pool = pools[word_class[k]]
        clip = _as_float(clips[pool[int(clip_pick[k] * pool.size)]])
        audio[starts[k] : starts[k] + clip_len] += clip * envelope
    np.clip(audio, -1.0, 1.0, out=audio)

    truth = pd.DataFrame(
        {"label": [label_names[c] for c in word_class], "time_ms": (starts + clip_len) * 1000.0 / sample_rate}
    )
    return audio, truth


def write_truth_csv(truth: pd.DataFrame, path: str | Path) -> None:
    """Write the truth atomically as CSV with the header `label,time_ms` (times at full precision)."""
    with atomic_path(path, ".csv") as tmp:
        truth[TRUTH_COLUMNS].to_csv(tmp, index=False)


def read_truth_csv(path: str | Path) -> pd.DataFrame:
    """Read a truth CSV written by write_truth_csv."""
    truth = pd.read_csv(path, dtype={"label": str, "time_ms": np.float64})
    if list(truth.columns) != TRUTH_COLUMNS:
        raise ValueError(f"{path}: expected columns {TRUTH_COLUMNS}, got {list(truth.columns)}")
    return truth
