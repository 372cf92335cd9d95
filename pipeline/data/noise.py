"""Six synthetic background-noise files (white, pink, brown, running tap, mains hum, babble), numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr

from pipeline.config import BACKGROUND_NOISE_DIR
from pipeline.data.render import stable_rng, wav_bytes, write_blob
from pipeline.data.synthetic import ESPEAK_RATE, speak, stop_speech_server, voice_configs
from pipeline.fileio import to_int16

NOISE_NAMES = ("white_noise", "pink_noise", "brown_noise", "running_tap", "mains_hum", "babble")
NOISE_PEAK = 0.7  # every file is peak-normalised to this, well below full scale
BABBLE_WORDS = """about after again air also animal answer because before began between book both came change children
city could country different does each early earth enough every family father find first food found great group hand
head heard idea important just kind land large later letter light line little long made many mean might mother move
much music name never number often open other paper people picture place plant point question read really river same
school second sentence small something sound spell still story study such take than their thing think those thought
through time together under until very want watch water where while white without work world would write year
young""".split()  # none of the Speech Commands words


def _shape(white: np.ndarray, sample_rate: int, gain) -> np.ndarray:
    """Filter noise in the frequency domain by gain(frequency in Hz)."""
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(len(white), 1.0 / sample_rate)
    return np.fft.irfft(spectrum * gain(freqs), len(white))


def _slow(rng: np.random.Generator, n: int, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Smooth random curve with zero mean and unit peak, varying below `cutoff_hz`."""
    curve = _shape(rng.standard_normal(n), sample_rate, lambda f: (f > 0) & (f < cutoff_hz))
    return curve / max(np.abs(curve).max(), 1e-12)


def _power_law(rng: np.random.Generator, n: int, sample_rate: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (1: pink, 2: brown), flat below 20 Hz and no DC."""
    return _shape(rng.standard_normal(n), sample_rate, lambda f: (f > 0) / np.maximum(f, 20.0) ** (exponent / 2))


def _running_tap(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Band-passed hiss with a few random resonances and a slowly gurgling level."""
    centres = rng.uniform(np.log(500.0), np.log(4500.0), 5)
    heights = rng.uniform(0.5, 2.0, 5)

    def gain(f: np.ndarray) -> np.ndarray:
        logf = np.log(np.maximum(f, 1.0))
        band = 1.0 / (1.0 + (300.0 / np.maximum(f, 1.0)) ** 4) / (1.0 + (f / 6000.0) ** 4)
        bumps = sum(h * np.exp(-(((logf - c) / 0.12) ** 2)) for c, h in zip(centres, heights, strict=True))
        return band * (0.4 + bumps)

    hiss = _shape(rng.standard_normal(n), sample_rate, gain)
    return hiss * (1.0 + 0.35 * _slow(rng, n, sample_rate, 6.0))


def _mains_hum(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """50 or 60 Hz hum with drifting frequency, odd-heavy harmonics and a little hiss."""
    f0 = float(rng.choice([50.0, 60.0]))
    freq = f0 * (1.0 + 0.002 * _slow(rng, n, sample_rate, 0.5))
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    hum = np.zeros(n)
    for k in range(1, 13):
        amp = rng.uniform(0.5, 1.0) / k * (1.0 if k % 2 else 0.4)
        if k * f0 < sample_rate / 2:
            hum += amp * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return hum + 0.01 * rng.standard_normal(n)


def babble_audio(seconds: int, sample_rate: int, seed: int, talkers: int = 8) -> np.ndarray:
    """Overlapping espeak talkers reading random sentences with pauses: `seconds` of float audio."""
    voices, mix = voice_configs(64), np.zeros(int(seconds) * sample_rate)
    for k in range(talkers):
        rng = stable_rng(seed, "babble", k)
        cfg = voices[int(rng.integers(len(voices)))]
        count = int(seconds) // 2 + 2  # sentences of 4..9 words last 1.5..4 s
        lines = [(cfg.voice_name, " ".join(rng.choice(BABBLE_WORDS, int(rng.integers(4, 10)))), cfg.rate, cfg.pitch,
                  cfg.pitch_range, int(rng.integers(1, 2**31 - 1))) for _ in range(count)]  # fmt: skip
        parts = [np.zeros(int(rng.integers(0, ESPEAK_RATE)), np.float32)]
        for pcm in speak(lines):
            parts += [pcm.astype(np.float32) / 32768, np.zeros(int(rng.uniform(0.1, 0.6) * ESPEAK_RATE), np.float32)]
        track = soxr.resample(np.concatenate(parts), ESPEAK_RATE, sample_rate)
        mix += np.resize(track, len(mix)) * rng.uniform(0.5, 1.0)
    return mix


def noise_files(seconds: int, sample_rate: int, seed: int) -> list[tuple[str, bytes]]:
    """The six noise files (`seconds` long, mono 16-bit) as (`_background_noise_/<name>.wav`, WAV bytes)."""
    n = int(seconds) * sample_rate
    makers = {
        "white_noise": lambda rng: rng.standard_normal(n),
        "pink_noise": lambda rng: _power_law(rng, n, sample_rate, 1.0),
        "brown_noise": lambda rng: _power_law(rng, n, sample_rate, 2.0),
        "running_tap": lambda rng: _running_tap(rng, n, sample_rate),
        "mains_hum": lambda rng: _mains_hum(rng, n, sample_rate),
        "babble": lambda rng: np.resize(np.asarray(babble_audio(seconds, sample_rate, seed), dtype=np.float64), n),
    }
    files = []
    for name in NOISE_NAMES:
        audio = makers[name](stable_rng(seed, "noise", name))
        audio = audio - audio.mean()
        audio = audio * (NOISE_PEAK / max(np.abs(audio).max(), 1e-12))
        files.append((f"{BACKGROUND_NOISE_DIR}/{name}.wav", wav_bytes(to_int16(audio), sample_rate)))
    return files


def synthesize_noises(out_dir: Path, seconds: int, sample_rate: int, seed: int) -> list[Path]:
    """Write the six noise files into out_dir (in this process); returns their paths."""
    try:
        files = noise_files(seconds, sample_rate, seed)
    finally:
        stop_speech_server()
    paths = [Path(out_dir) / Path(rel).name for rel, _ in files]
    for path, (_, blob) in zip(paths, files, strict=True):
        write_blob(path, blob)
    return paths
