"""Draw a clip's waveform and its frontend output (what the model sees) to a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import FeaturesParams
from pipeline.fileio import atomic_path

_AXES = {
    "mfcc": ("MFCC", "coefficient"),
    "log_mel": ("log-mel", "mel bin"),
    "spectrogram": ("log spectrogram", "FFT bin"),
}


def load_clip(wav_path: Path, p: FeaturesParams) -> np.ndarray:
    """A wav as mono float32 at p.sample_rate, zero-padded or trimmed to p.clip_samples (the shared loader)."""
    from pipeline.predict import read_clip

    return read_clip(wav_path, p.sample_rate, p.clip_samples).audio


def draw_spectrogram(wav_path: Path, out_png: Path, p: FeaturesParams) -> None:
    """Two panels, waveform and frontend output with a colorbar; the PNG is written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pipeline.features.frontend import compute_features

    clip = load_clip(Path(wav_path), p)
    features = compute_features(clip, p)  # [frames, bins]
    seconds = np.arange(len(clip)) / p.sample_rate
    window_s, stride_s = p.window_samples / p.sample_rate, p.stride_samples / p.sample_rate
    t0 = window_s / 2 - stride_s / 2  # frame i covers its window; centre it on the time axis
    t1 = t0 + features.shape[0] * stride_s

    fig = Figure(figsize=(8, 6), layout="constrained")
    wave_ax, feat_ax = fig.subplots(2, 1, height_ratios=[1, 2])
    wave_ax.plot(seconds, clip, linewidth=0.6)
    duration = len(clip) / p.sample_rate
    wave_ax.set(xlabel="time (s)", ylabel="amplitude", xlim=(0, duration), ylim=(-1.05, 1.05))
    wave_ax.set_title(f"{Path(wav_path).name}: waveform")
    image = feat_ax.imshow(
        features.T, origin="lower", aspect="auto", cmap="magma", extent=(t0, t1, -0.5, features.shape[1] - 0.5)
    )
    fig.colorbar(image, ax=feat_ax, label="value")
    name, unit = _AXES[p.preprocess]
    feat_ax.set(xlabel=f"time (s); one frame = {stride_s * 1000:g} ms", ylabel=unit, xlim=(0, duration))
    feat_ax.set_title(f"{name} ({p.preprocess}): {features.shape[0]} frames × {features.shape[1]} bins")
    with atomic_path(out_png, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
