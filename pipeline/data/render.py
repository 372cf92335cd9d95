"""One render path for every voice engine (espeak, Piper, Kokoro): trim, resample, colour, place, level, WAV bytes.

A clip is a pure function of the engine's PCM and a `Take` (the repetition's seeded variation): resample from
`REFERENCE_RATE * take.stretch` to `sample_rate` (soxr MQ in float32), apply the speaker's microphone tilt and
room impulse response, trim, cut anything over the clip with a 10 ms fade, place at `take.offset`, peak-normalise
to `take.peak` and pad to exactly `clip` samples of int16. Engines that speak at another rate fold it into the
stretch (`stretch = engine_rate * jitter / REFERENCE_RATE`).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soxr

from pipeline.fileio import atomic_path, to_int16

REFERENCE_RATE = 22050  # Hz: Take.stretch is relative to this rate (espeak-ng's own)
MAX_FILL = 0.9  # a word over this share of the clip is re-spoken faster


class Take(NamedTuple):
    """One repetition's variation: engine rate/pitch/range, stretch (vs REFERENCE_RATE), seed, offset 0..1, peak."""

    rate: float
    pitch: int
    pitch_range: int
    stretch: float
    seed: int
    offset: float
    peak: float


def stable_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by sha256 of the parts (never Python's salted hash())."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def trim(audio: np.ndarray, rel_db: float, pad: int) -> np.ndarray:
    """Drop leading/trailing samples quieter than rel_db below the peak, keeping `pad` samples."""
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max(initial=0) * 10 ** (rel_db / 20))
    return audio[max(loud[0] - pad, 0) : loud[-1] + pad + 1] if loud.size else audio[:0]


def fit_limit(take: Take, sample_rate: int, clip: int) -> int:
    """The most engine samples (at REFERENCE_RATE * stretch) that fill MAX_FILL of a `clip`-sample clip."""
    return int(MAX_FILL * clip * REFERENCE_RATE * take.stretch / sample_rate)


def render(pcm: np.ndarray, take: Take, tilt: int, ir: np.ndarray, sample_rate: int, clip: int) -> np.ndarray:
    """Resample, colour (tilt in 0.1 dB/octave, impulse response `ir`), fit and place one word: int16 [clip]."""
    # float32 keeps soxr on its SSE engine; MQ (16-bit precision) is 3x faster than HQ at irrational ratios
    audio = soxr.resample(pcm.astype(np.float32) / 32768, REFERENCE_RATE * take.stretch, sample_rate, quality="MQ")
    if tilt or len(ir) > 1:
        n = len(audio) + len(ir) - 1
        nfft = 1 << (n - 1).bit_length()
        freqs = np.fft.rfftfreq(nfft, 1 / sample_rate)
        gain = 10 ** (tilt / 10 * np.log2(np.maximum(freqs, 100.0) / 1000) / 20) * np.fft.rfft(ir, nfft)
        audio = np.fft.irfft(np.fft.rfft(audio, nfft) * gain, nfft)[:n]
    audio = trim(np.asarray(audio, dtype=np.float64), -50, 0)
    if len(audio) > clip:
        audio = audio[:clip].copy()
        fade = int(0.01 * sample_rate)
        audio[-fade:] *= np.linspace(1.0, 0.0, fade)
    out = np.zeros(clip)
    start = int(take.offset * (clip - len(audio) + 1))
    out[start : start + len(audio)] = audio
    return to_int16(out * (take.peak / np.abs(out).max()))


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file's bytes (44-byte header) for int16 samples."""
    data = np.asarray(audio).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(data)) + data


def write_blob(path: Path, blob: bytes) -> int:
    """Atomically write bytes (no fsync, no listing of the folder per file); returns the size written."""
    with atomic_path(path, Path(path).suffix, clean=False) as tmp:
        tmp.write_bytes(blob)
    return len(blob)
