"""Background noise for the split stage: per-set time portions of each noise file and silence excerpts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from pipeline.config import BACKGROUND_NOISE_DIR
from pipeline.errors import DataError
from pipeline.fileio import read_wav, to_int16

SETS = ("training", "validation", "testing")


@dataclass(frozen=True)
class NoisePortion:
    """The stretch of one noise file that belongs to one set; sets never share samples."""

    path: str
    source: str
    set: str
    audio: np.ndarray


def load_noises(raw_root: Path, sample_rate: int) -> list[tuple[str, str, np.ndarray]]:
    """(relative path, source, mono float32 audio at `sample_rate`) for every background-noise wav."""
    noises = []
    for wav in sorted(raw_root.glob(f"*/{BACKGROUND_NOISE_DIR}/*.wav")):
        try:
            audio, rate = read_wav(wav)
        except Exception as error:  # noqa: BLE001 - report any decoder failure as a data error
            raise DataError(f"{wav}: cannot decode background noise ({error})") from None
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if rate != sample_rate:
            audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
        noises.append((str(wav.relative_to(raw_root)), wav.parent.parent.name, audio))
    return noises


def split_noises(
    noises: list[tuple[str, str, np.ndarray]], validation_percentage: float, testing_percentage: float, clip_samples: int
) -> list[NoisePortion]:
    """Cut each noise file in time: training first, then validation, then testing."""
    portions = []
    for path, source, audio in noises:
        n = len(audio)
        val_start = int(round(n * (100 - validation_percentage - testing_percentage) / 100))
        test_start = int(round(n * (100 - testing_percentage) / 100))
        for name, (lo, hi) in zip(SETS, ((0, val_start), (val_start, test_start), (test_start, n)), strict=True):
            if hi - lo >= clip_samples:
                portions.append(NoisePortion(path, source, name, audio[lo:hi]))
    return portions


def silence_rows(
    portions: list[NoisePortion],
    set_name: str,
    count: int,
    clip_samples: int,
    sample_rate: int,
    max_volume: float,
    rng: np.random.Generator,
) -> tuple[list[dict], np.ndarray]:
    """`count` silence clips for one set: excerpts of that set's noise portions at a random volume."""
    pool = [p for p in portions if p.set == set_name]
    if count and not pool:
        raise DataError(f"no background noise long enough for {set_name} silence clips (add a _background_noise_ folder)")
    rows, clips = [], np.zeros((count, clip_samples), dtype=np.int16)
    weights = np.array([len(p.audio) - clip_samples + 1 for p in pool], dtype=np.float64)
    for i in range(count):
        portion = pool[rng.choice(len(pool), p=weights / weights.sum())]
        offset = int(rng.integers(0, len(portion.audio) - clip_samples + 1))
        volume = float(rng.uniform(0.05, 1.0) * max_volume)
        excerpt = portion.audio[offset : offset + clip_samples] * volume
        clips[i] = to_int16(excerpt)
        as_float = clips[i].astype(np.float32) / 32768.0
        rows.append(
            {
                "path": f"{portion.path}@{set_name}:{offset}",
                "source": portion.source,
                "word": "_silence_",
                "speaker": f"noise-{Path(portion.path).stem}",
                "repetition": i,
                "sample_rate": sample_rate,
                "channels": 1,
                "bits": 16,
                "original_length": clip_samples,
                "rms": float(np.sqrt(np.mean(as_float**2))),
                "peak": float(np.abs(as_float).max()),
                "sha256": hashlib.sha256(clips[i].tobytes()).hexdigest(),
            }
        )
    return rows, clips


def pack_portions(portions: list[NoisePortion], set_name: str) -> np.ndarray:
    """All of one set's noise as one int16 array (for augmentation and long test recordings)."""
    parts = [to_int16(p.audio) for p in portions if p.set == set_name]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
