"""Describe a raw dataset folder: clips, speakers, duration and size per word."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import soundfile as sf

from pipeline.config import BACKGROUND_NOISE_DIR
from pipeline.data.layout import detect_layout, find_clips, parse_clip
from pipeline.errors import DataError


def _roots(path: Path) -> list[Path]:
    """A dataset folder itself, or each source folder inside a `data/raw` folder."""
    if not path.is_dir():
        raise DataError(f"{path}: folder not found")
    sources = sorted(p for p in path.iterdir() if (p / "source.json").is_file())
    return sources or [path]  # a `data/raw` folder holds one folder per source, each with its source.json


def dataset_info(path: Path) -> pd.DataFrame:
    """One row per (source, word): clips, distinct speakers, seconds of audio, bytes; unreadable files counted."""
    rows = []
    for root in _roots(Path(path)):
        detect_layout(root)
        for found in find_clips(root):
            clip, wav = parse_clip(found.rel), found.path
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
