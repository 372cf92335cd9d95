"""Atomic writes (temp file + rename) and the one wav reader/writer every module uses."""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.errors import DataError, DiskFullError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what a plain open() would give, not mkstemp's private 0600
_DIR_MODE = 0o777 & ~_umask()  # what a plain mkdir would give (0755), not mkdtemp's private 0700
_TEMP_TAIL = re.compile(r"^(?:[a-z0-9_]{8}(?:\..*)?|old)$")  # after `.<name>.`: mkstemp/mkdtemp's 8 characters, or `old`

def remove_stale_temps(dest: str | Path, suffix: str | None = None) -> list[Path]:
    """Delete what an interrupted atomic write of `dest` left beside it (`.<name>.XXXXXXXX<suffix>`, `.<name>.old`).

    Safe because one stage at a time writes an output (DVC locks the repository). Returns the removed paths.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    removed = []
    for entry in dest.parent.glob(f".{glob.escape(dest.name)}.*"):
        tail = entry.name[len(dest.name) + 2 :]
        if not _TEMP_TAIL.match(tail) or (suffix is not None and entry.is_file() and not entry.name.endswith(suffix)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk, so a power cut cannot leave a truncated file behind a rename."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as error:  # some file systems refuse fsync on folders
        if error.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "", durable: bool = False, clean: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    `durable`: fsync the file and its folder around the rename (checkpoints: a power cut leaves the old or the new
    file, never a truncated one). `clean`: first remove leftovers of an earlier interrupted write of `dest` (one
    listing of the folder; writers of thousands of small files in one folder pass False).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temps(dest, suffix or ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _disk_full_names(dest):
            yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _FILE_MODE)
            if durable:
                _fsync(tmp_path)
        os.replace(tmp_path, dest)
        if durable:
            _fsync(dest.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder (mode 0755 under the usual umask) beside `dest`; it replaces `dest` only if
    the block succeeds. Temporary folders left beside `dest` by an interrupted earlier run are removed first."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: exists and is not a folder; expected a folder to write into (or a new name)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as error:  # a file where a folder should be, a read-only or missing mount
        raise DataError(f"{dest}: cannot create a folder there ({error.strerror or error})") from None
    os.chmod(tmp, _DIR_MODE)
    try:
        with _disk_full_names(dest):
            yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the disk that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def ensure_space(path: str | Path, needed: int, what: str = "") -> None:
    """Raise DiskFullError before any work when the disk of `path` has less than `needed` bytes free."""
    free = free_bytes(path)
    if free < needed:
        raise DiskFullError(f"{path}: {what + ' ' if what else ''}needs about {_mb(needed)} free, only {_mb(free)} left on its disk")


def _mb(count: int) -> str:
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


def disk_full_message(error: BaseException, path: str | Path | None = None) -> str | None:
    """One line for an out-of-space error (OSError ENOSPC, or TensorFlow's/h5py's wording of it); None otherwise.

    `path`: the output being written, when the caller knows it better than the error does.
    """
    text = str(error)
    if not ((isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in text):
        return None
    where = str(path or getattr(error, "filename", None) or "")
    try:
        left = f" ({_mb(free_bytes(where or Path.cwd()))} left on its disk)"
    except OSError:
        left = ""
    return f"no space left on device{' writing ' + where if where else ''}{left}: free some space and run it again"


@contextlib.contextmanager
def _disk_full_names(dest: Path) -> Iterator[None]:
    """Turn an out-of-space error inside an atomic write into DiskFullError naming the output."""
    try:
        yield
    except Exception as error:
        message = disk_full_message(error, dest)
        if message is None:
            raise
        raise DiskFullError(message) from None


def write_json(path: str | Path, payload: object) -> None:
    """Write pretty, key-sorted JSON atomically."""
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def reproducible_zip(path: str | Path, rewrite: dict[str, Callable[[bytes], bytes]] | None = None) -> None:
    """Rewrite the zip archive at `path` in place so that the same contents give the same bytes: every entry dated
    ZIP_EPOCH with mode 0644 (Keras's model.save stamps the current time), and the members named in `rewrite`
    passed through their function. Entries, order and compression are kept. As reproducible builds normalise
    archives (https://reproducible-builds.org/docs/archives/). Meant for a temporary file before its atomic
    rename; the archive is read whole into memory."""
    rewrite = rewrite or {}
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            fixed = zipfile.ZipInfo(info.filename, ZIP_EPOCH)
            fixed.compress_type, fixed.external_attr = info.compress_type, 0o644 << 16
            archive.writestr(fixed, rewrite.get(info.filename, lambda same: same)(data))


def _keras_metadata(data: bytes) -> bytes:
    """metadata.json without `date_saved`."""
    return json.dumps({k: v for k, v in json.loads(data).items() if k != "date_saved"}).encode()


def _keras_config(data: bytes) -> bytes:
    """config.json with each `shared_object_id` (the Python id() of a shared object at save time, different in every
    process) renumbered 1, 2, ... in order of first appearance: the same sharing, the same text."""
    numbers: dict[bytes, bytes] = {}
    return re.sub(rb'("shared_object_id": )(\d+)',
                  lambda m: m.group(1) + numbers.setdefault(m.group(2), str(len(numbers) + 1).encode()), data)  # fmt: skip


def write_keras(path: str | Path, model) -> None:
    """Save a Keras model (`model.save`) as a .keras file atomically; the same model gives the same bytes in any
    process at any time (reproducible_zip; no save time, shared-object ids renumbered), so DVC sees a retrained
    but identical model as unchanged."""
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
        reproducible_zip(tmp, {"metadata.json": _keras_metadata, "config.json": _keras_config})


def write_npz(path: str | Path, arrays: dict[str, np.ndarray], durable: bool = False) -> None:
    """Write named arrays as one uncompressed .npz atomically (fsynced with `durable`). np.savez dates every entry
    ZIP_EPOCH, so the same arrays give the same bytes."""
    with atomic_path(path, ".npz", durable=durable) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to 16-bit PCM, clipping anything outside the range."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM atomically; float input is taken as [-1, 1]."""
    data = samples if samples.dtype == np.int16 else to_int16(samples)
    with atomic_path(path, ".wav", clean=False) as tmp:
        sf.write(tmp, data, sample_rate, subtype="PCM_16", format="WAV")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a wav as float32 in [-1, 1], shape [samples] (mono) or [samples, channels]."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    return data, int(rate)
