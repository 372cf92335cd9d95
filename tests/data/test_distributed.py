"""Generation and features on a 2-node local Ray cluster equal the in-process run; a killed worker loses nothing.

The cluster is two `ray start` nodes on 127.0.0.1 with one CPU each (so a 2-worker pipeline must use both),
started and stopped by the fixture with bounded waits.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.compute import map_tasks
from pipeline.config import SyntheticSource
from pipeline.data.generate import CorpusWorker, corpus_tasks, generate_corpus
from pipeline.data.neural import neural_voices
from tests.conftest import TINY_SPLIT, TINY_WORDS, make_params, write_tone_corpus

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"
ENV = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
START_TIMEOUT_S = 180
WORDS = ["yes", "off"]
SOURCE = SyntheticSource(kind="synthetic", speakers=3, repetitions=2, noise_seconds=2)
FEATURE_TOLERANCE = 1e-5  # float features: TensorFlow on 1 thread per worker vs all cores in one process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def _cluster_pids(markers: tuple[str, ...]) -> list[int]:
    """Processes (not this one) whose command line holds one of `markers` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(marker.encode() in cmdline for marker in markers):
            found.append(int(entry.name))
    return found


def _stop_cluster(port: int, temp: str, timeout_s: float = 60) -> None:
    """Stop this test's cluster only: SIGTERM, then SIGKILL, every process naming its GCS port or its temp folder.
    `ray stop --force` would also stop any other Ray on the machine, e.g. a `make run` beside the tests."""
    markers = (f"127.0.0.1:{port}", f"_port={port}", temp)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(markers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s / 2
        while _cluster_pids(markers) and time.monotonic() < deadline:
            time.sleep(0.2)


def _start_node(*args: str, stop=None, attempts: int = 3) -> None:
    """`ray start`, tried again when the node misses Ray's fixed 30 s registration deadline (a loaded machine);
    `stop()` ends a head's half-started processes before it is tried again."""
    for attempt in range(attempts):
        if attempt and stop is not None:
            stop()
        done = _ray("start", *args)
        if done.returncode == 0:
            return
        if "timed out during startup" not in done.stderr + done.stdout and "Deadline Exceeded" not in done.stderr:
            break
    raise AssertionError(f"ray start {' '.join(args)} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def cluster():
    """RAY_ADDRESS of a head node and a second node on 127.0.0.1, one CPU each, sharing a token of their own
    (token authentication); afterwards its processes, and only those, are stopped."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="kws-ray-")  # short: Ray's socket paths are limited
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    saved = {key: os.environ.get(key) for key in auth}
    os.environ.update(auth)  # this process connects as a driver with the same token
    ENV.update(auth)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--object-store-memory={200 * 1024**2}",
              "--disable-usage-stats"]  # fmt: skip
    try:
        _start_node("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common,
                    stop=lambda: _stop_cluster(port, temp))  # fmt: skip
        _start_node(f"--address=127.0.0.1:{port}", *common)
        address = f"127.0.0.1:{port}"
        _wait_for_nodes(address, 2)
        yield address
    finally:
        _stop_cluster(port, temp)
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wait_for_nodes(address: str, count: int) -> None:
    import ray

    ray.init(address=address, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while sum(n["Alive"] for n in ray.nodes()) < count:
            assert time.monotonic() < deadline, f"only {sum(n['Alive'] for n in ray.nodes())} of {count} Ray nodes"
            time.sleep(1)
        assert ray.cluster_resources()["CPU"] == count
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def in_process_corpus(tmp_path_factory) -> Path:
    """The reference: espeak speakers, one Kokoro blend and the noises, generated in this process."""
    root = tmp_path_factory.mktemp("in_process")
    generate_corpus(SOURCE, WORDS, 5, root, workers=1, progress=False, voices=neural_voices(1, 5)[1:])
    return root


def test_generation_on_two_nodes_equals_in_process(cluster, in_process_corpus, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    summary = generate_corpus(SOURCE, WORDS, 5, tmp_path, workers=2, progress=False, voices=neural_voices(1, 5)[1:])
    assert summary == {**summary, "clips": 3 * 2 * 2, "speakers": 3, "noise_files": 6}
    assert summary["neural"] == {**summary["neural"], "clips": 2, "speakers": 1}
    reference = _hashes(in_process_corpus)
    assert len(reference) == 14 + 6 and _hashes(tmp_path) == reference  # byte-identical, espeak and Kokoro


def test_features_on_two_nodes_equal_in_process(cluster, tmp_path, monkeypatch) -> None:
    from pipeline.data.sources import fetch_sources
    from pipeline.data.split import run_split
    from pipeline.features.extract import run_features

    write_tone_corpus(tmp_path / "corpus", ["yes", "no", "cat", "dog"], speakers=20, reps=2, noise_seconds=20)
    features = {"preprocess": "speech_embedding", "embedding": {"views": 2}}
    params = make_params(tmp_path, data=TINY_WORDS, split=TINY_SPLIT, features=features)
    fetch_sources(params, progress=False)
    run_split(params, progress=False)
    local = run_features(params, workers=1)
    arrays = {n: np.load(params.paths.features / f"{n}_features.npy") for n in ("training", "validation", "testing")}
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    assert run_features(params, workers=2) == local
    for name, expected in arrays.items():
        got = np.load(params.paths.features / f"{name}_features.npy")
        assert got.shape == expected.shape and expected.shape[-2:] == (16, 96)
        np.testing.assert_allclose(got, expected, rtol=0, atol=FEATURE_TOLERANCE)
    assert arrays["training"].shape[0] == 2 and not np.allclose(arrays["training"][0], arrays["training"][1])


class KilledOnce(CorpusWorker):
    """A CorpusWorker that, on the first attempt at its `victim` task, records its pid and waits to be killed."""

    def __init__(self, marker: str, victim: str, *args) -> None:
        super().__init__(*args)
        self.marker, self.victim = Path(marker), victim

    def __call__(self, item: tuple):
        if item[0] == "espeak" and item[1].speaker_id == self.victim and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(120)  # the test kills this process meanwhile
        return super().__call__(item)


def test_killed_worker_task_is_retried_with_the_same_output(cluster, in_process_corpus, tmp_path, monkeypatch) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not on the workers' path
    monkeypatch.setenv("RAY_ADDRESS", cluster)
    tasks = corpus_tasks(SOURCE, WORDS)
    marker, victim = tmp_path / "victim.pid", tasks[1][1].speaker_id
    killed: list[int] = []

    def kill_when_marked() -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not marker.exists() or not marker.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)  # kill -9 of the Ray worker, mid-task
        killed.append(pid)

    killer = threading.Thread(target=kill_when_marked, daemon=True)
    killer.start()
    args = (str(marker), victim, 5, SOURCE.repetitions, SOURCE.neural_repetitions, SOURCE.noise_seconds, 16000, 16000)
    results: dict[int, list] = {}
    for index, files in map_tasks(KilledOnce, args, tasks, workers=2):
        assert index not in results, f"task {index} delivered twice"
        results[index] = files
    killer.join(timeout=10)
    assert killed and killed[0] != os.getpid()
    assert sorted(results) == list(range(len(tasks)))  # nothing lost
    written = {rel: hashlib.sha256(blob).hexdigest() for files in results.values() for rel, blob in files}
    reference = {k: v for k, v in _hashes(in_process_corpus).items() if "/" in k and not k.startswith(tuple(
        f"{w}/{v.speaker_id}" for w in WORDS for v in neural_voices(1, 5)[1:]))}  # fmt: skip
    assert written == reference
