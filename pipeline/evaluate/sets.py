"""Labelled folders of wavs (either Speech Commands layout) as evaluation sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL
from pipeline.data.layout import detect_layout, find_clips, parse_clip
from pipeline.errors import DataError
from pipeline.audio import read_audio

log = logging.getLogger(__name__)


@dataclass
class FolderSet:
    """Clips of one folder brought to the model's format, their label indices and what was skipped."""

    audio: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[tuple[str, str]]


def label_of(word: str, labels: list[str]) -> str:
    """The class a spoken word belongs to under the current keyword list."""
    if word == SILENCE_LABEL or word in labels:
        return word
    return UNKNOWN_LABEL


def load_folder_set(root: Path, labels: list[str], sample_rate: int, clip_samples: int) -> FolderSet:
    """Every wav one folder deep, resampled/padded as needed; unreadable files are listed, not fatal."""
    detect_layout(root)
    audio, targets, paths, skipped = [], [], [], []
    for found in find_clips(root):
        rel = str(found.rel)
        try:
            clip = read_audio(found.path, sample_rate, clip_samples)
        except DataError as error:
            skipped.append((rel, str(error)))
            continue
        audio.append(clip.audio)
        targets.append(labels.index(label_of(parse_clip(rel).word, labels)))
        paths.append(rel)
    if skipped:
        log.warning("%s: skipped %d unreadable file(s), e.g. %s", root, len(skipped), skipped[0][1])
    if not audio:
        raise DataError(f"{root}: no readable wav files")
    return FolderSet(np.stack(audio), np.asarray(targets, np.int64), paths, skipped)
