"""Speech Commands folder layouts: find every file of a dataset folder, parse clip names, import into `data/raw`.

Rules (each file of a dataset folder gets exactly one fate, recorded by name in the import summary):
- the dataset may sit inside single wrapping folders (`tiny/yes/...`, the common way archives are packed);
- a clip is any `*.wav` (any case) under a word folder, at any depth: the word is the *top* folder, lower-cased
  (`Yes/` is the keyword `yes`, reported as a mapped folder); the test-set `_unknown_/<word>_<speaker>...wav.wav`
  names the word in the file name;
- hidden files and folders (`.DS_Store`, macOS `._*` companions, `.git/`) are skipped, and so are files outside
  word folders that are not wavs (LICENSE, lists, READMEs);
- anything else a user put where clips go is *rejected* with a reason (later quarantined by the split stage):
  a non-wav file in a word folder, a wav outside any word folder, a broken or looping link, something that is
  not a regular file, a file that cannot be read.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from pipeline.config import BACKGROUND_NOISE_DIR, COMMANDS, OTHER_WORDS, SILENCE_LABEL, UNKNOWN_LABEL
from pipeline.errors import DataError

log = logging.getLogger(__name__)
Layout = Literal["speech_commands", "test_set"]
_NOHASH = re.compile(r"_nohash_.*$")
_REPETITION = re.compile(r"_nohash_(\d+)")
_SYSTEM_FILES = {"thumbs.db", "desktop.ini"}
_KNOWN_FOLDERS = {*COMMANDS, *OTHER_WORDS, UNKNOWN_LABEL, SILENCE_LABEL, BACKGROUND_NOISE_DIR}


@dataclass(frozen=True)
class ClipName:
    """Where a clip belongs: its spoken word, its speaker and its file name in the training layout."""

    word: str
    speaker: str
    repetition: int
    name: str


def _is_wav(name: str) -> bool:
    return name.lower().endswith(".wav")


def hash_name(name: str) -> str:
    """TensorFlow's speaker key of a clip file name: the name without its `_nohash_` suffix.

    A name without `_nohash_` is its own key, extension included (`alice_1.wav`), exactly as in TF's `which_set`;
    name clips `<speaker>_nohash_<n>.wav` to keep all clips of a speaker in one set.
    """
    return _NOHASH.sub("", name)


def parse_clip(relpath: str | Path) -> ClipName:
    """Parse `word/[sub/]<speaker>_nohash_<n>.wav` or the test-set `_unknown_/<word>_<speaker>_nohash_<n>.wav.wav`.

    The word is the top folder of `relpath` (relative to the dataset root), lower-cased.
    Raises DataError for a test-set `_unknown_` name without a `<word>_` prefix.
    """
    parts = PurePosixPath(Path(relpath).as_posix()).parts
    folder, name = (parts[0] if len(parts) > 1 else ""), parts[-1]
    word = folder.lower()
    if word == UNKNOWN_LABEL:
        if name.lower().endswith(".wav.wav"):
            name = name[: -len(".wav")]
        spoken, sep, rest = name.partition("_")
        if not sep or not rest or not spoken:
            raise DataError(f"{relpath}: expected `_unknown_/<word>_<speaker>_nohash_<n>.wav.wav`")
        word, name = spoken.lower(), rest
    stem = name[: -len(".wav")] if _is_wav(name) else name
    speaker = hash_name(name) if word != SILENCE_LABEL else f"silence-{stem}"
    match = _REPETITION.search(stem)
    return ClipName(word=word, speaker=speaker, repetition=int(match.group(1)) if match else 0, name=name)


@dataclass(frozen=True)
class Found:
    """One file (or skipped folder) of a dataset folder: `rel` is its path below the dataset root."""

    rel: PurePosixPath
    path: Path
    reason: str = ""


@dataclass
class Inventory:
    """Every file below a dataset root, each in exactly one list."""

    root: Path
    clips: list[Found] = field(default_factory=list)
    noise: list[Found] = field(default_factory=list)
    skipped: list[Found] = field(default_factory=list)
    rejected: list[Found] = field(default_factory=list)


def _visible(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError as error:
        raise DataError(f"{folder}: cannot list the folder ({error.strerror or error})") from None


def dataset_root(root: Path, words: set[str] | frozenset[str] = frozenset()) -> Path:
    """`root`, or the folder inside single wrapping folders that holds the word folders (`tiny/yes/...`).

    A lone folder is entered only when it holds no wav itself, is not itself a known word or label, and has a
    sub-folder that is one (`words`, the Speech Commands words, `_unknown_`, `_silence_`, `_background_noise_`).
    Raises DataError when `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    known = _KNOWN_FOLDERS | {w.lower() for w in words}
    while True:
        entries = _visible(root)
        folders = [p for p in entries if p.is_dir()]
        if len(folders) != 1 or any(_is_wav(p.name) for p in entries if not p.is_dir()):
            return root
        inner = folders[0]
        if inner.name.lower() in known or not any(p.is_dir() and p.name.lower() in known for p in _visible(inner)):
            return root
        root = inner


def _regular_file(path: Path) -> str:
    """'' for a readable-looking regular file, else why it cannot be a clip."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if path.is_symlink():
            return "broken or looping symbolic link" if error.errno in (errno.ENOENT, errno.ELOOP) else f"cannot read: {error.strerror}"
        return f"cannot read: {error.strerror or error}"
    return "" if stat.S_ISREG(mode) else "not a regular file"


def scan_tree(root: Path, noise_dir: Path | None = None) -> Inventory:
    """Classify every file below `root` (links followed, loops refused); `noise_dir` adds noise files."""
    found = Inventory(root)
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True, onerror=lambda e: _walk_error(found, root, e)):
        here = Path(folder)
        info = here.stat()
        if (info.st_dev, info.st_ino) in seen:
            found.rejected.append(Found(_rel(here, root), here, "symbolic link loop (folder already visited)"))
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        for name in sorted(d for d in dirs if d.startswith(".")):
            found.skipped.append(Found(_rel(here / name, root), here / name, "hidden folder"))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            _classify(found, root, here / name)
    if noise_dir is not None:
        if not noise_dir.is_dir():
            raise DataError(f"{noise_dir}: background noise folder not found")
        for wav in sorted(p for p in noise_dir.iterdir() if _is_wav(p.name) and not p.name.startswith(".")):
            found.noise.append(Found(PurePosixPath(BACKGROUND_NOISE_DIR, wav.name), wav))
    return found


def _rel(path: Path, root: Path) -> PurePosixPath:
    return PurePosixPath(path.relative_to(root).as_posix())


def _walk_error(found: Inventory, root: Path, error: OSError) -> None:
    path = Path(error.filename)
    found.rejected.append(Found(_rel(path, root), path, f"cannot read folder: {error.strerror or error}"))


def _classify(found: Inventory, root: Path, path: Path) -> None:
    rel = _rel(path, root)
    name, top = rel.name, (rel.parts[0] if len(rel.parts) > 1 else "")
    if name.startswith("."):
        found.skipped.append(Found(rel, path, "hidden file"))
        return
    problem = _regular_file(path)
    if top.lower() == BACKGROUND_NOISE_DIR:
        if len(rel.parts) == 2 and _is_wav(name) and not problem:
            found.noise.append(Found(rel, path))
        else:
            found.skipped.append(Found(rel, path, problem or "not a noise recording (wav directly in _background_noise_)"))
    elif not top:
        if _is_wav(name):
            found.rejected.append(Found(rel, path, "wav outside any word folder: put it in a folder named after its word"))
        else:
            found.skipped.append(Found(rel, path, "not audio (outside word folders)"))
    elif name.lower() in _SYSTEM_FILES:
        found.skipped.append(Found(rel, path, "system file"))
    elif problem:
        found.rejected.append(Found(rel, path, problem))
    elif not _is_wav(name):
        found.rejected.append(Found(rel, path, "not a .wav file in a word folder"))
    else:
        found.clips.append(Found(rel, path))


def detect_layout(root: Path) -> Layout:
    """The test-set layout has `_unknown_` or `_silence_` folders; the training layout has neither."""
    root = dataset_root(root)
    names = {p.name.lower() for p in _visible(root) if p.is_dir()}
    if not names - {BACKGROUND_NOISE_DIR}:
        raise DataError(f"{root}: no word folders found (expected e.g. yes/, no/, ...)")
    return "test_set" if names & {UNKNOWN_LABEL, SILENCE_LABEL} else "speech_commands"


def find_clips(root: Path) -> list[Found]:
    """All clips of a dataset folder (word folders at any depth, wrapping folders entered), sorted by path;
    `rel` is relative to the dataset root, ready for `parse_clip`. Noise, hidden and rejected files are left out."""
    return scan_tree(dataset_root(root)).clips


def target_path(rel: PurePosixPath) -> PurePosixPath:
    """Where a clip found at `rel` goes in the training layout: `<word>/[sub/]<name>` (test-set names unwrapped)."""
    clip = parse_clip(rel)
    return PurePosixPath(clip.word, *rel.parts[1:-1], clip.name)


def _place(src: Path, dest: Path, move: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dest)
    else:
        shutil.copyfile(src, dest)


def import_tree(
    src: Path,
    dest: Path,
    layout: str = "auto",
    noise_dir: Path | None = None,
    move: bool = False,
    words: set[str] | frozenset[str] = frozenset(),
) -> dict:
    """Copy (or move) a dataset into `dest` in the training layout; every file is counted, none dropped silently.

    Returns the import summary: layout, `root` (the wrapping folders entered), counts of clips and noise files,
    `mapped_folders` (folder -> word, e.g. `Yes` -> `yes`), and `skipped` / `rejected` lists of
    {path, reason}. Raises DataError when two files map to one clip name, or `noise_dir` is missing.
    """
    src = Path(src)
    root = dataset_root(src, words)
    found_layout = detect_layout(root) if layout == "auto" else layout
    inventory = scan_tree(root, noise_dir)
    rejected = list(inventory.rejected)
    placed: dict[PurePosixPath, PurePosixPath] = {}
    mapped: dict[str, str] = {}
    for clip in inventory.clips:
        try:
            target = target_path(clip.rel)
        except DataError as error:
            rejected.append(Found(clip.rel, clip.path, str(error).split(": ", 1)[-1]))
            continue
        if target in placed:
            raise DataError(f"{root / clip.rel} and {root / placed[target]} both map to {target}; rename one")
        top = clip.rel.parts[0]
        if top.lower() != UNKNOWN_LABEL and top != top.lower():
            mapped[top] = top.lower()
        try:
            _place(clip.path, dest / target, move)
        except OSError as error:
            rejected.append(Found(clip.rel, clip.path, f"cannot read: {error.strerror or error}"))
            continue
        placed[target] = clip.rel
    for noise in inventory.noise:
        _place(noise.path, dest / BACKGROUND_NOISE_DIR / noise.rel.name, move and noise.path.is_relative_to(root))
    for folder, word in mapped.items():
        log.warning("%s/: clips taken as the word %r (folder names are lower-cased)", root / folder, word)
    return {
        "layout": found_layout,
        "root": root.relative_to(src).as_posix(),
        "clips": len(placed),
        "noise_files": len(inventory.noise),
        "mapped_folders": dict(sorted(mapped.items())),
        "skipped": [{"path": str(f.rel), "reason": f.reason} for f in inventory.skipped],
        "rejected": [{"path": str(f.rel), "reason": f.reason} for f in sorted(rejected, key=lambda f: f.rel)],
    }
