"""Describe a raw dataset folder: clips, speakers, duration and size per word."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import soundfile as sf

from pipeline.config import BACKGROUND_NOISE_DIR
from pipeline.data.layout import detect_layout, iter_wavs, parse_clip
from pipeline.errors import DataError


def _roots(path: Path) -> list[Path]:
    """A dataset folder itself, or each source folder inside a `data/raw` folder."""
    if not path.is_dir():
        raise DataError(f"{path}: folder not found")
    if any((path / name).is_dir() for name in ("yes", BACKGROUND_NOISE_DIR, "_unknown_")) or iter_wavs(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def dataset_info(path: Path) -> pd.DataFrame:
    """One row per (source, word): clips, distinct speakers, seconds of audio, bytes; unreadable files counted."""
    rows = []
    for root in _roots(Path(path)):
        detect_layout(root)
        for wav in iter_wavs(root):
            clip = parse_clip(wav.relative_to(root))
            try:
                info = sf.info(str(wav))
                seconds, unreadable = info.frames / info.samplerate, 0
            except (sf.LibsndfileError, RuntimeError):
                seconds, unreadable = 0.0, 1
            rows.append((root.name, clip.word, clip.speaker, seconds, wav.stat().st_size, unreadable))
        for noise in sorted((root / BACKGROUND_NOISE_DIR).glob("*.wav")):
            info = sf.info(str(noise))
            rows.append((root.name, BACKGROUND_NOISE_DIR, noise.stem, info.frames / info.samplerate, noise.stat().st_size, 0))
    frame = pd.DataFrame(rows, columns=["source", "word", "speaker", "seconds", "bytes", "unreadable"])
    if frame.empty:
        raise DataError(f"{path}: no wav files found")
    table = frame.groupby(["source", "word"], sort=True).agg(
        clips=("speaker", "size"),
        speakers=("speaker", "nunique"),
        seconds=("seconds", "sum"),
        bytes=("bytes", "sum"),
        unreadable=("unreadable", "sum"),
    )
    return table.reset_index()
