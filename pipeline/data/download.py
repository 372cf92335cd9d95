"""The `url` source: resumable HTTP download, sha256/size verification and safe tar extraction."""

from __future__ import annotations

import errno
import gzip
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from pipeline.config import UrlSource
from pipeline.errors import DataError, DownloadError
from pipeline.fileio import atomic_dir, write_text
from pipeline.progress import progress_bar

log = logging.getLogger(__name__)

USER_AGENT = "kws-pipeline/0.1 (+urllib)"
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def _sha256_file(path: Path) -> hashlib._Hash:
    """Hash object over a whole file, ready for further updates."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of a Content-Range header; None where absent or '*'."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _reason(exc: BaseException) -> str:
    """A short human reason for a network exception."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason) or type(reason).__name__


class _Restart(Exception):
    """The partial file does not line up with the server's answer: start again from byte zero."""


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | None:
    """GET url from byte `offset`; None when the server says the range is already complete (416)."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total is None or total == offset:
                return None
            raise _Restart from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{url}: connection failed: {_reason(exc)}") from None


def _stream(
    url: str, part: Path, offset: int, expected_size: int | None, progress: bool, chunk_size: int, timeout: float
) -> str:
    """Write the body of url into `part` starting at `offset`; return the sha256 of the whole file."""
    response = _open(url, offset, timeout)
    if response is None:
        return _sha256_file(part).hexdigest()
    with response:
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Restart
        else:
            offset, length = 0, response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            raise DataError(f"{url}: size mismatch: expected {expected_size} bytes, server reports {total}")
        hasher = _sha256_file(part) if offset else hashlib.sha256()
        received = offset
        bar = progress_bar(total, part.name.removesuffix(".part"), "B", progress, initial=offset, leave=False)
        try:
            with part.open("ab" if offset else "wb") as fh:
                while True:
                    try:
                        chunk = response.read(chunk_size)
                    except (OSError, http.client.HTTPException) as exc:
                        raise DownloadError(
                            f"{url}: connection failed: {_reason(exc)} after {received} bytes; run again to resume"
                        ) from None
                    if not chunk:
                        break
                    fh.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(f"no space left on device while writing {part}") from None
            raise
        finally:
            bar.close()
    if total is not None and received != total:
        raise DownloadError(
            f"{url}: connection failed: transfer ended after {received} of {total} bytes; run again to resume"
        )
    return hasher.hexdigest()


class CorruptArchive(DataError):
    """The downloaded file is not a readable tar archive (truncated, damaged, or an error page)."""


class ChecksumMismatch(DataError):
    """The archive is intact as the server sent it, but its sha256 is not the one pinned in params.yaml."""

    def __init__(self, dest: Path, expected: str, digest: str) -> None:
        self.digest = digest
        super().__init__(
            f"{dest}: sha256 mismatch: expected {expected} (params.yaml), the downloaded file has {digest}; "
            "it is kept: pin that sha256 if you trust the source, or delete the file to download again"
        )


def download(
    url: str,
    dest: Path,
    expected_sha256: str = "",
    expected_size: int | None = None,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    timeout: float = 60.0,
    known_sha256: str = "",
) -> str:
    """Download url to dest through a resumable `.part` file, verify size and sha256, rename; return the sha256.

    `known_sha256` is what an earlier download of this URL recorded: an existing `dest` with that digest is the
    server's file, so a different `expected_sha256` raises ChecksumMismatch without downloading it again. A
    complete fresh download with the wrong sha256 is kept as `dest` (ChecksumMismatch); a resumed one whose
    sha256 is wrong is removed (the old part may be the culprit). Raises DataError / DownloadError.
    """
    dest = Path(dest)
    part = dest.with_suffix(dest.suffix + ".part")
    expected_sha256 = expected_sha256.lower()
    if dest.exists():
        digest = _sha256_file(dest).hexdigest()
        size = dest.stat().st_size
        if (not expected_sha256 or digest == expected_sha256) and expected_size in (None, size):
            log.info("%s already downloaded (sha256 %s)", dest, digest)
            return digest
        if digest == known_sha256 and expected_size in (None, size):
            raise ChecksumMismatch(dest, expected_sha256, digest)
        log.warning("%s does not match the expected size/sha256; downloading it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if offset:
        log.info("resuming %s from byte %d", url, offset)
    resumed = offset > 0
    if expected_size is not None and offset == expected_size:
        digest = _sha256_file(part).hexdigest()  # complete already: no request needed
    else:
        try:
            digest = _stream(url, part, offset, expected_size, progress, chunk_size, timeout)
        except _Restart:
            log.warning("server answer does not continue %s; downloading from the start", part)
            part.unlink(missing_ok=True)
            resumed = False
            digest = _stream(url, part, 0, expected_size, progress, chunk_size, timeout)
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DataError(f"{dest}: size mismatch: expected {expected_size} bytes, got {size}")
    if expected_sha256 and digest != expected_sha256:
        if resumed:
            part.unlink()
            raise DataError(
                f"{dest}: sha256 mismatch after resuming a partial download: expected {expected_sha256}, got {digest}; "
                "the partial file was removed, run again to download it afresh"
            )
        os.replace(part, dest)
        raise ChecksumMismatch(dest, expected_sha256, digest)
    os.replace(part, dest)
    return digest


def _member_path(archive: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The member's relative path; DataError for absolute paths, '..' and anything but files and folders."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"{archive}: refusing member with an absolute path {name!r}")
    path = PurePosixPath(name)
    if ".." in path.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise DataError(f"{archive}: refusing member with a '..' component {name!r}")
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise DataError(f"{archive}: refusing {kind} member {name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: refusing special (device/fifo) member {name!r}")
    if not path.parts and not member.isdir():
        raise DataError(f"{archive}: refusing member with an empty name")
    return path


def safe_extract(archive: Path, target: Path) -> int:
    """Extract a tar / tar.gz into a fresh `target` atomically, refusing unsafe members; return the file count."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DataError(f"{archive}: file not found")
    if not tarfile.is_tarfile(archive):
        raise CorruptArchive(f"{archive} is not a tar archive")
    files = 0
    try:
        with atomic_dir(target) as tmp, tarfile.open(archive, "r:*") as tar:  # not "r|*": a stream silently stops at a truncated gzip
            for member in tar:
                rel = _member_path(archive, member)
                out = tmp.joinpath(*rel.parts)
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with source, out.open("wb") as fh:
                    shutil.copyfileobj(source, fh, 1 << 20)
                files += 1
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise CorruptArchive(f"{archive}: corrupt archive: {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DownloadError(f"no space left on device while extracting {archive} into {target}") from None
        raise DataError(f"{archive}: cannot extract: {exc}") from None
    return files


def _archive_name(source: UrlSource) -> str:
    """The file name the archive is stored under: the URL's basename, or `<source name>.tar.gz`."""
    name = unquote(PurePosixPath(urlsplit(source.url).path).name)
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        name = f"{source.name}.tar.gz"
    return name


@dataclass(frozen=True)
class Record:
    """`<archive>.sha256` beside a download: the URL it came from and the sha256/size observed ('' while pending)."""

    url: str
    sha256: str = ""
    size: int | None = None

    @staticmethod
    def read(path: Path) -> Record | None:
        if not path.is_file():
            return None
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        fields = dict(line[2:].split(": ", 1) for line in lines[1:] if line.startswith("# ") and ": " in line)
        digest = lines[0].split()[0] if lines and lines[0].split() else ""
        size = fields.get("bytes", "")
        return Record(fields.get("url", ""), digest if re.fullmatch(r"[0-9a-f]{64}", digest) else "",
                      int(size) if size.isdigit() else None)  # fmt: skip

    def write(self, path: Path) -> None:
        size = f"# bytes: {self.size}\n" if self.size is not None else ""
        write_text(path, f"{self.sha256 or 'pending'}  {path.name.removesuffix('.sha256')}\n# url: {self.url}\n{size}")


def fetch_url_source(source: UrlSource, downloads_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """Download, record, verify and extract one `url` source; return {url, sha256, bytes, files}.

    The record is keyed by URL: a new URL under the same file name replaces the old archive once (its own
    partial download then resumes). An archive that fails to extract is moved aside to `<name>.corrupt`, so
    the next run downloads it again; that copy is removed once a new download extracts. Raises DataError / DownloadError.
    """
    downloads_dir = Path(downloads_dir)
    name = _archive_name(source)
    archive = downloads_dir / name
    aside = archive.with_name(archive.name + ".corrupt")  # where an archive that fails to extract is kept
    record_path = downloads_dir / f"{name}.sha256"
    record = Record.read(record_path)
    if record is None or record.url != source.url:
        if record is not None:
            log.warning("%s was fetched from %s; downloading %s instead", archive, record.url, source.url)
            archive.unlink(missing_ok=True)
            archive.with_suffix(archive.suffix + ".part").unlink(missing_ok=True)
        elif archive.exists():
            log.warning("%s has no record of its URL; verifying it against %s", archive, source.url)
        record = Record(source.url)
        downloads_dir.mkdir(parents=True, exist_ok=True)
        record.write(record_path)
    try:
        digest = download(source.url, archive, source.sha256, source.size, progress=progress,
                          known_sha256=record.sha256)  # fmt: skip
    except ChecksumMismatch as error:
        Record(source.url, error.digest, archive.stat().st_size).write(record_path)
        raise
    size = archive.stat().st_size
    Record(source.url, digest, size).write(record_path)
    if not source.sha256:
        log.info("%s: sha256 %s, %d bytes; pin them as sha256/size in params.yaml (source %s)",
                 name, digest, size, source.name)  # fmt: skip
    try:
        files = safe_extract(archive, Path(out_dir))
    except CorruptArchive as error:
        os.replace(archive, aside)
        Record(source.url).write(record_path)
        raise DataError(f"{error}; moved to {aside} so the next run downloads it again") from None
    if aside.exists():  # the copy kept for inspection is not needed once a good archive extracted (2.4 GB for the real one)
        aside.unlink()
        log.info("removed %s: the new download extracted", aside)
    return {"url": source.url, "sha256": digest, "bytes": size, "files": files}
