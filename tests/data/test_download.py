"""The `url` source against a local HTTP server: resume, Range handling, checksums, safe extraction."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import UrlSource
from pipeline.data.download import download, fetch_url_source, safe_extract
from pipeline.errors import DataError, DownloadError

pytestmark = pytest.mark.timeout(30)

ARCHIVE = "speech_commands_v0.02.tar.gz"


class Server:
    """A tiny Range-aware file server with a request log and a one-shot 'drop after N bytes' switch."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[dict] = []
        self.drop_after: int | None = None
        self.ignore_range = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.state = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        state: Server = self.server.state  # type: ignore[attr-defined]
        entry = {"path": self.path, "range": self.headers.get("Range"), "status": None, "sent": 0}
        state.log.append(entry)
        data = state.files.get(self.path.lstrip("/"))
        if data is None:
            entry["status"] = 404
            self.send_error(404, "Not Found")
            return
        start, status = 0, 200
        if entry["range"] and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", entry["range"]).group(1))
            if start >= len(data):
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if state.drop_after is not None:
            body, state.drop_after = body[: state.drop_after], None
            entry["sent"] = len(body)
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        entry["sent"] = len(body)
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


def _wav(seed: int) -> bytes:
    samples = np.random.default_rng(seed).integers(-3000, 3000, 4000, dtype=np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _tar(members: dict[str, bytes], prefix: str = "", dirs: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if dirs:
            for folder in sorted({name.split("/")[0] for name in members} | {"."}):
                info = tarfile.TarInfo(prefix + folder if folder != "." else ".")
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
        for name, payload in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


SPEECH_COMMANDS = {
    "yes/0a7c2a8d_nohash_0.wav": _wav(1),
    "yes/0a7c2a8d_nohash_1.wav": _wav(2),
    "no/0b77ee66_nohash_0.wav": _wav(3),
    "_background_noise_/white_noise.wav": _wav(4),
    "validation_list.txt": b"no/0b77ee66_nohash_0.wav\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_fetch_downloads_verifies_records_and_extracts(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    source = UrlSource(kind="url", url=server.url(ARCHIVE), sha256=_sha(data).upper(), size=len(data))
    out = tmp_path / "extracted"
    result = fetch_url_source(source, tmp_path / "downloads", out, progress=True)
    assert result == {"url": source.url, "sha256": _sha(data), "bytes": len(data), "files": len(SPEECH_COMMANDS)}
    for name, payload in SPEECH_COMMANDS.items():
        assert (out / name).read_bytes() == payload
    assert (tmp_path / "downloads" / ARCHIVE).read_bytes() == data
    record = (tmp_path / "downloads" / f"{ARCHIVE}.sha256").read_text()
    assert record.splitlines()[0] == f"{_sha(data)}  {ARCHIVE}" and f"# bytes: {len(data)}" in record
    assert _leftovers(tmp_path / "downloads") == [ARCHIVE, f"{ARCHIVE}.sha256"]
    assert _leftovers(tmp_path) == ["downloads", "extracted"]
    # a second run finds the verified archive and does not download it again
    assert fetch_url_source(source, tmp_path / "downloads", out, progress=False)["files"] == len(SPEECH_COMMANDS)
    assert len(server.log) == 1
    # the same file name from another URL is downloaded again rather than trusted
    server.files[f"v2/{ARCHIVE}"] = data2 = _tar({"yes/new.wav": _wav(9)})
    moved = UrlSource(kind="url", url=server.url(f"v2/{ARCHIVE}"))
    assert fetch_url_source(moved, tmp_path / "downloads", out, progress=False)["sha256"] == _sha(data2)
    assert _leftovers(out) == ["yes"] and _leftovers(out / "yes") == ["new.wav"]


def test_test_set_layout_with_dot_prefix_and_folder_members_extracts(server: Server, tmp_path: Path) -> None:
    members = {"_silence_/a.wav": _wav(5), "_unknown_/bed_b.wav": _wav(6), "yes/c.wav": _wav(7)}
    server.files["speech_commands_test_set_v0.02.tar.gz"] = _tar(members, prefix="./", dirs=True)
    source = UrlSource(kind="url", url=server.url("speech_commands_test_set_v0.02.tar.gz"))
    result = fetch_url_source(source, tmp_path / "downloads", tmp_path / "out", progress=False)
    assert result["files"] == 3
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.wav")) == sorted(members)


def test_dropped_connection_leaves_part_and_next_call_resumes(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    half = len(data) // 2
    server.files[ARCHIVE] = data
    server.drop_after = half
    dest = tmp_path / ARCHIVE
    part = tmp_path / f"{ARCHIVE}.part"
    with pytest.raises(DownloadError, match=r"connection failed: .*run again to resume"):
        download(server.url(ARCHIVE), dest, progress=False, chunk_size=4096)
    assert not dest.exists() and part.stat().st_size == half
    assert download(server.url(ARCHIVE), dest, _sha(data), len(data), progress=False) == _sha(data)
    assert dest.read_bytes() == data and not part.exists()
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [
        (None, 200, half),
        (f"bytes={half}-", 206, len(data) - half),
    ]


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    server.ignore_range = True
    dest = tmp_path / ARCHIVE
    (tmp_path / f"{ARCHIVE}.part").write_bytes(data[:1000])
    assert download(server.url(ARCHIVE), dest, _sha(data), progress=False) == _sha(data)
    assert dest.read_bytes() == data
    assert [(e["range"], e["status"], e["sent"]) for e in server.log] == [("bytes=1000-", 200, len(data))]


def test_complete_part_answered_416_is_verified_and_renamed(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    (tmp_path / f"{ARCHIVE}.part").write_bytes(data)
    assert download(server.url(ARCHIVE), tmp_path / ARCHIVE, _sha(data), progress=False) == _sha(data)
    assert (tmp_path / ARCHIVE).read_bytes() == data
    assert [(e["range"], e["status"]) for e in server.log] == [(f"bytes={len(data)}-", 416)]
    # with the size pinned, a complete .part needs no request at all
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{ARCHIVE}.part").write_bytes(data)
    assert download(server.url(ARCHIVE), tmp_path / "b" / ARCHIVE, "", len(data), progress=False) == _sha(data)
    assert len(server.log) == 1 and _leftovers(tmp_path / "b") == [ARCHIVE]


def test_wrong_pinned_sha256_keeps_the_archive_and_reports_both_hashes(server: Server, tmp_path: Path) -> None:
    """Fault 10 of issue 14: a verified archive is never deleted and fetched again over a wrong pin."""
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    downloads, out = tmp_path / "downloads", tmp_path / "out"
    fetch_url_source(UrlSource(kind="url", url=server.url(ARCHIVE)), downloads, out, progress=False)
    wrong = UrlSource(kind="url", url=server.url(ARCHIVE), sha256="0" * 64)
    expected = f"sha256 mismatch: expected {'0' * 64} \\(params.yaml\\), the downloaded file has {_sha(data)}; it is kept"
    for _ in range(2):
        with pytest.raises(DataError, match=expected):
            fetch_url_source(wrong, downloads, tmp_path / "out2", progress=False)
    assert len(server.log) == 1, "the verified archive is not downloaded again"
    assert (downloads / ARCHIVE).read_bytes() == data and not (tmp_path / "out2").exists()
    # the pin fixed: no request, the kept archive extracts
    right = UrlSource(kind="url", url=server.url(ARCHIVE), sha256=_sha(data))
    assert fetch_url_source(right, downloads, tmp_path / "out3", progress=False)["files"] == len(SPEECH_COMMANDS)
    assert len(server.log) == 1


def test_fresh_download_with_a_wrong_pin_is_kept_once_and_not_fetched_again(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    source = UrlSource(kind="url", url=server.url(ARCHIVE), sha256="0" * 64)
    downloads, out = tmp_path / "downloads", tmp_path / "out"
    for _ in range(2):
        with pytest.raises(DataError, match=f"expected {'0' * 64} .* has {_sha(data)}; it is kept"):
            fetch_url_source(source, downloads, out, progress=False)
    assert len(server.log) == 1 and not out.exists()
    assert _leftovers(downloads) == [ARCHIVE, f"{ARCHIVE}.sha256"]
    assert (downloads / f"{ARCHIVE}.sha256").read_text().splitlines()[0] == f"{_sha(data)}  {ARCHIVE}"


def test_corrupt_archive_without_pin_is_moved_aside_and_downloaded_again(server: Server, tmp_path: Path) -> None:
    """Fault 11 of issue 14: a broken archive is not kept as 'already downloaded'."""
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data[: len(data) // 2]  # the server sends a truncated file
    source = UrlSource(kind="url", url=server.url(ARCHIVE))
    downloads, out = tmp_path / "downloads", tmp_path / "out"
    with pytest.raises(DataError, match=rf"corrupt archive: .*; moved to .*{re.escape(ARCHIVE)}\.corrupt so the next run downloads it again$"):
        fetch_url_source(source, downloads, out, progress=False)
    assert _leftovers(downloads) == [ARCHIVE + ".corrupt", f"{ARCHIVE}.sha256"] and not out.exists()
    server.files[ARCHIVE] = data  # the server is fixed
    assert fetch_url_source(source, downloads, out, progress=False)["sha256"] == _sha(data)
    assert [e["status"] for e in server.log] == [200, 200]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(SPEECH_COMMANDS)
    assert _leftovers(downloads) == [ARCHIVE, f"{ARCHIVE}.sha256"], "the corrupt copy goes once a good one extracted"


def test_new_url_with_the_same_file_name_resumes_its_partial_download(server: Server, tmp_path: Path) -> None:
    """Fault 12 of issue 14: the old URL's record must not delete the new URL's .part on every run."""
    old, new = _tar(SPEECH_COMMANDS), _tar({"yes/a_nohash_0.wav": _wav(11), "no/b_nohash_0.wav": _wav(12)})
    server.files[ARCHIVE], server.files[f"v2/{ARCHIVE}"] = old, new
    downloads = tmp_path / "downloads"
    fetch_url_source(UrlSource(kind="url", url=server.url(ARCHIVE)), downloads, tmp_path / "out", progress=False)
    moved = UrlSource(kind="url", url=server.url(f"v2/{ARCHIVE}"))
    half = len(new) // 2
    server.drop_after = half
    with pytest.raises(DownloadError, match="run again to resume"):
        fetch_url_source(moved, downloads, tmp_path / "out", progress=False)
    assert (downloads / f"{ARCHIVE}.part").stat().st_size == half and not (downloads / ARCHIVE).exists()
    assert fetch_url_source(moved, downloads, tmp_path / "out", progress=False)["sha256"] == _sha(new)
    assert [(e["path"], e["range"]) for e in server.log][1:] == [(f"/v2/{ARCHIVE}", None), (f"/v2/{ARCHIVE}", f"bytes={half}-")]


def test_archive_wrapped_in_one_top_folder_is_found(server: Server, tmp_path: Path) -> None:
    """Fault 9 of issue 14: `tiny/yes/...` is the Speech Commands layout inside one folder."""
    from pipeline.data.sources import fetch_sources
    from tests.conftest import make_params

    members = {f"tiny/{name}": payload for name, payload in SPEECH_COMMANDS.items()}
    server.files["tiny.tar.gz"] = _tar(members)
    params = make_params(tmp_path, sources=[{"kind": "url", "name": "sc", "url": server.url("tiny.tar.gz")}])
    summary = fetch_sources(params, progress=False)["sc"]
    assert (summary["root"], summary["clips"], summary["noise_files"]) == ("tiny", 3, 1)
    assert summary["skipped"] == [{"path": "validation_list.txt", "reason": "not audio (outside word folders)"}]
    raw = params.paths.raw / "sc"
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*.wav")) == sorted(n for n in SPEECH_COMMANDS if n.endswith(".wav"))


def test_corrupt_part_fails_checksum_then_next_call_downloads_afresh(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    part = tmp_path / f"{ARCHIVE}.part"
    part.write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="sha256 mismatch"):
        download(server.url(ARCHIVE), tmp_path / ARCHIVE, _sha(data), progress=False)
    assert not part.exists() and not (tmp_path / ARCHIVE).exists()
    assert download(server.url(ARCHIVE), tmp_path / ARCHIVE, _sha(data), progress=False) == _sha(data)


def test_size_mismatch_and_stale_dest(server: Server, tmp_path: Path) -> None:
    data = _tar(SPEECH_COMMANDS)
    server.files[ARCHIVE] = data
    dest = tmp_path / ARCHIVE
    with pytest.raises(DataError, match=f"size mismatch: expected {len(data) + 1} bytes"):
        download(server.url(ARCHIVE), dest, expected_size=len(data) + 1, progress=False)
    assert _leftovers(tmp_path) == []
    dest.write_bytes(b"an older, different archive")
    assert download(server.url(ARCHIVE), dest, _sha(data), len(data), progress=False) == _sha(data)
    assert dest.read_bytes() == data


def test_http_404_and_connection_refused_are_download_errors(server: Server, tmp_path: Path) -> None:
    url = server.url("missing.tar.gz")
    with pytest.raises(DownloadError, match=f"^{re.escape(url)}: HTTP 404 Not Found$"):
        download(url, tmp_path / "missing.tar.gz", progress=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match="connection failed"):
        download(f"http://127.0.0.1:{port}/x.tar.gz", tmp_path / "x.tar.gz", progress=False, timeout=5)
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_disk_full_is_a_download_error(server: Server, tmp_path: Path) -> None:
    server.files[ARCHIVE] = _tar(SPEECH_COMMANDS)
    (tmp_path / f"{ARCHIVE}.part").symlink_to("/dev/full")
    with pytest.raises(DownloadError, match=f"^no space left on device while writing .*{re.escape(ARCHIVE)}.part$"):
        download(server.url(ARCHIVE), tmp_path / ARCHIVE, progress=False)


@pytest.mark.parametrize("payload", [b"<html>not an archive</html>", gzip.compress(b"plain text, gzipped " * 50)])
def test_non_tar_file_is_a_data_error(server: Server, tmp_path: Path, payload: bytes) -> None:
    server.files["page.tar.gz"] = payload
    source = UrlSource(kind="url", url=server.url("page.tar.gz"))
    with pytest.raises(DataError, match=r"page\.tar\.gz is not a tar archive; moved to .*page\.tar\.gz\.corrupt so the next"):
        fetch_url_source(source, tmp_path / "downloads", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def _evil(kind: str, outside: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        good = tarfile.TarInfo("yes/ok.wav")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"wav"))
        info = tarfile.TarInfo({"dotdot": "yes/../../escape.txt", "absolute": str(outside)}.get(kind, "yes/evil"))
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, str(outside)
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "yes/ok.wav"
        elif kind == "fifo":
            info.type = tarfile.FIFOTYPE
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
        payload = b"pwned" if kind in {"dotdot", "absolute"} else b""
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


REFUSALS = {
    "dotdot": "refusing member with a '..' component",
    "absolute": "refusing member with an absolute path",
    "symlink": "refusing symlink member",
    "hardlink": "refusing hardlink member",
    "fifo": "refusing special (device/fifo) member",
    "device": "refusing special (device/fifo) member",
}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "fifo", "device"])
def test_malicious_archive_is_refused_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "escape.txt"
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_evil(kind, outside))
    with pytest.raises(DataError, match=re.escape(REFUSALS[kind])):
        safe_extract(archive, work / "target")
    assert _leftovers(work) == [] and not outside.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz", "work"]
