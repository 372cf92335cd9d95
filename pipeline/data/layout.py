"""Speech Commands folder layouts: parse clip names and bring the test-set layout into the training layout."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.config import BACKGROUND_NOISE_DIR, SILENCE_LABEL, UNKNOWN_LABEL
from pipeline.errors import DataError

Layout = Literal["speech_commands", "test_set"]
_NOHASH = re.compile(r"_nohash_.*$")
_REPETITION = re.compile(r"_nohash_(\d+)")


@dataclass(frozen=True)
class ClipName:
    """Where a clip belongs: its spoken word, its speaker and its file name in the training layout."""

    word: str
    speaker: str
    repetition: int
    name: str


def parse_clip(relpath: str | Path) -> ClipName:
    """Parse `word/<speaker>_nohash_<n>.wav` or the test-set `_unknown_/<word>_<speaker>_nohash_<n>.wav.wav`."""
    path = Path(relpath)
    folder, name = path.parent.name, path.name
    if folder == UNKNOWN_LABEL:
        if name.endswith(".wav.wav"):
            name = name[: -len(".wav")]
        word, sep, rest = name.partition("_")
        if not sep or not rest:
            raise DataError(f"{relpath}: expected `_unknown_/<word>_<speaker>_nohash_<n>.wav.wav`")
        folder, name = word, rest
    stem = name[: -len(".wav")] if name.endswith(".wav") else name
    speaker = _NOHASH.sub("", stem) if folder != SILENCE_LABEL else f"silence-{stem}"
    match = _REPETITION.search(stem)
    return ClipName(word=folder, speaker=speaker, repetition=int(match.group(1)) if match else 0, name=name)


def detect_layout(root: Path) -> Layout:
    """The test-set layout has `_unknown_` or `_silence_` folders; the training layout has neither."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    names = {p.name for p in root.iterdir() if p.is_dir()}
    if not names - {BACKGROUND_NOISE_DIR}:
        raise DataError(f"{root}: no word folders found (expected e.g. yes/, no/, ...)")
    return "test_set" if names & {UNKNOWN_LABEL, SILENCE_LABEL} else "speech_commands"


def iter_wavs(root: Path) -> list[Path]:
    """All wav files one folder deep (word folders), sorted, background noise excluded."""
    return sorted(
        p
        for p in root.glob("*/*")
        if p.parent.name != BACKGROUND_NOISE_DIR and p.name.lower().endswith(".wav") and p.is_file()
    )


def _place(src: Path, dest: Path, move: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dest)
    else:
        shutil.copyfile(src, dest)


def import_tree(src: Path, dest: Path, layout: str = "auto", noise_dir: Path | None = None, move: bool = False) -> dict:
    """Copy (or move) a dataset into `dest` in the training layout; report counts, never drop a wav silently."""
    found = detect_layout(src) if layout == "auto" else layout
    wavs = iter_wavs(src)
    known = set(wavs) | set((src / BACKGROUND_NOISE_DIR).glob("*.wav"))
    others = [p for p in src.rglob("*.wav") if p.is_file() and p not in known]
    counts = {"clips": 0, "noise_files": 0, "layout": found, "ignored_wavs": len(others)}
    for wav in wavs:
        clip = parse_clip(wav.relative_to(src))
        target = dest / clip.word / clip.name
        if target.exists():
            raise DataError(f"{wav}: two clips map to {target.relative_to(dest)}")
        _place(wav, target, move)
        counts["clips"] += 1
    for noise_root in (src / BACKGROUND_NOISE_DIR, noise_dir):
        if noise_root is None or not noise_root.is_dir():
            continue
        for wav in sorted(noise_root.glob("*.wav")):
            _place(wav, dest / BACKGROUND_NOISE_DIR / wav.name, move and noise_root != noise_dir)
            counts["noise_files"] += 1
    if noise_dir is not None and not noise_dir.is_dir():
        raise DataError(f"{noise_dir}: background noise folder not found")
    return counts
