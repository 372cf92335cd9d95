"""Draw a recording's waveform and what the frontend makes of it (every `features.preprocess`) to a PNG.

The whole file is drawn at its true length (no padding or trimming to one clip). For `speech_embedding` two
panels show what the model sees: the embedding's 32-bin mel input (10 ms frames) and the 96-d embedding
sequence (one vector every 80 ms, each covering 782 ms of audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.audio import read_audio
from pipeline.config import FeaturesParams
from pipeline.errors import DataError
from pipeline.fileio import atomic_path
from pipeline.features.geometry import EMBEDDING_MEL_STRIDE, EMBEDDING_MEL_WINDOW, STREAM_HOP, STREAM_SPAN

_AXES = {
    "mfcc": ("MFCC", "coefficient"),
    "log_mel": ("log-mel", "mel bin"),
    "spectrogram": ("log spectrogram", "FFT bin"),
    "embedding_mel": ("speech-embedding mel", "mel bin"),
}


@dataclass
class Panel:
    """One feature image [frames, bins]: frame i covers [start + i * hop, start + i * hop + span) samples."""

    title: str
    unit: str
    values: np.ndarray
    hop: int
    span: int


@dataclass
class Drawing:
    """What `draw_spectrogram` converted and drew, for the CLI to report."""

    seconds: float
    notes: list[str] = field(default_factory=list)
    panels: list[str] = field(default_factory=list)


def feature_panels(audio: np.ndarray, p: FeaturesParams) -> list[Panel]:
    """The feature images of a whole recording [S] (float32 at p.sample_rate) for `p.preprocess`."""
    from pipeline.features.frontend import AudioFrontend, compute_features

    if p.preprocess != "speech_embedding":
        if len(audio) < p.window_samples:
            raise DataError(f"{len(audio)} samples are shorter than one {p.window_size_ms:g} ms frontend window")
        name, unit = _AXES[p.preprocess]
        values = compute_features(audio, p)
        return [Panel(f"{name} ({p.preprocess})", unit, values, p.stride_samples, p.window_samples)]
    import tensorflow as tf

    from pipeline.features.embedding import EmbeddingFeatures

    mel = AudioFrontend("embedding_mel")(tf.constant(audio[None]))[0].numpy()
    tuned = p.embedding.backbone_file  # the finetune stage's convolutions, as every stage embeds with them
    layer = EmbeddingFeatures(backbone=tuned, tuned_convs=p.embedding.finetune.convs)
    layer.build((None, None))
    vectors = layer.sequence(tf.constant(audio[None]))[0].numpy()
    name = f"speech embedding, last {p.embedding.finetune.convs} convolutions fine-tuned" if tuned else "speech embedding"
    return [
        Panel("speech-embedding mel input (embedding_mel)", "mel bin", mel, EMBEDDING_MEL_STRIDE, EMBEDDING_MEL_WINDOW),
        Panel(f"{name} (speech_embedding)", "dimension", vectors, STREAM_HOP, STREAM_SPAN),
    ]


def draw_spectrogram(wav_path: Path, out_png: Path, p: FeaturesParams) -> Drawing:
    """Waveform and one panel per feature image, time axes in seconds over the whole file; PNG written atomically.

    Raises DataError for a missing, unreadable or empty file, or one shorter than the frontend needs."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    clip = read_audio(Path(wav_path), p.sample_rate)
    audio, notes = clip.audio, list(clip.notes)
    if p.preprocess == "speech_embedding" and len(audio) < STREAM_SPAN:
        notes.append(f"padded {len(audio)} samples to {STREAM_SPAN} (one embedding needs {STREAM_SPAN / p.sample_rate:.3f} s)")
        audio = np.pad(audio, (0, STREAM_SPAN - len(audio)))
    panels = feature_panels(audio, p)
    duration = len(audio) / p.sample_rate
    fig = Figure(figsize=(9, 2.5 + 2.5 * len(panels)), layout="constrained")
    axes = fig.subplots(1 + len(panels), 1, height_ratios=[1] + [2] * len(panels))
    axes[0].plot(np.arange(len(audio)) / p.sample_rate, audio, linewidth=0.5)
    axes[0].set(xlabel="time (s)", ylabel="amplitude", xlim=(0, duration), ylim=(-1.05, 1.05))
    axes[0].set_title(f"{Path(wav_path).name}: {clip.seconds:.2f} s" + (f" ({'; '.join(notes)})" if notes else ""), fontsize=9)
    described = []
    for ax, panel in zip(axes[1:], panels, strict=True):
        frames, bins = panel.values.shape
        t0 = (panel.span / 2 - panel.hop / 2) / p.sample_rate  # frame i drawn around the centre of what it covers
        t1 = t0 + frames * panel.hop / p.sample_rate
        image = ax.imshow(panel.values.T, origin="lower", aspect="auto", cmap="magma", extent=(t0, t1, -0.5, bins - 0.5))
        fig.colorbar(image, ax=ax, label="value")
        ax.set(xlabel=f"time (s); one frame every {panel.hop * 1000 / p.sample_rate:g} ms, covering "
                      f"{panel.span * 1000 / p.sample_rate:g} ms", ylabel=panel.unit, xlim=(0, duration))  # fmt: skip
        ax.set_title(f"{panel.title}: {frames} frames × {bins}", fontsize=9)
        described.append(f"{panel.title}: {frames} frames × {bins}")
    with atomic_path(out_png, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Drawing(clip.seconds, notes, described)
