"""Shared test helpers: tiny corpora written by the tests themselves, and params pointing into tmp dirs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REAL_DEV = SHARED / "speech_commands_test_v0.02_dev"
REAL_NOISE = SHARED / "_background_noise_"
requires_shared = pytest.mark.skipif(not REAL_DEV.is_dir(), reason=f"real clips not present at {REAL_DEV}")


def speaker_id(index: int) -> str:
    """A stable 8-hex speaker id, like the real dataset's."""
    return hashlib.sha1(f"spk{index}".encode()).hexdigest()[:8]


def tone_clip(word: str, speaker: int, rep: int, samples: int = 16000, rate: int = 16000) -> np.ndarray:
    """A distinct, non-silent 'word': a short chord whose pitches depend on the word and speaker."""
    rng = np.random.default_rng(int(hashlib.sha1(f"{word}/{speaker}/{rep}".encode()).hexdigest()[:8], 16))
    t = np.arange(samples // 2) / rate
    base = 200 + 40 * (sum(map(ord, word)) % 23) + 5 * speaker
    burst = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3)) * np.hanning(len(t))
    clip = np.zeros(samples, dtype=np.float32)
    start = int(rng.integers(0, samples - len(t)))
    clip[start : start + len(t)] = 0.3 * burst / np.abs(burst).max()
    return clip + 0.001 * rng.standard_normal(samples).astype(np.float32)


def write_tone_corpus(root: Path, words: list[str], speakers: int, reps: int, noise_seconds: int = 4) -> Path:
    """A tiny dataset in the Speech Commands layout, with two background-noise files."""
    for word in words:
        for s in range(speakers):
            for r in range(reps):
                path = root / word / f"{speaker_id(s)}_nohash_{r}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, tone_clip(word, s, r), 16000, subtype="PCM_16")
    rng = np.random.default_rng(7)
    noise_dir = root / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    for name in ("white", "hum"):
        noise = 0.3 * rng.uniform(-1, 1, 16000 * noise_seconds)
        sf.write(noise_dir / f"{name}.wav", noise.astype(np.float32), 16000, subtype="PCM_16")
    return root


def make_params(tmp_path: Path, sources: list[dict] | None = None, **sections: dict) -> Params:
    """Params for a test: every path inside tmp_path, a local source by default."""
    raw = {
        "seed": 1,
        "paths": {name: str(tmp_path / name) for name in ("raw", "downloads", "split", "features", "reports")},
        "data": {
            "sources": sources or [{"kind": "local", "name": "tones", "path": str(tmp_path / "corpus")}],
        },
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_params(raw)
