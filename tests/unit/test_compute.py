"""Where the heavy stages run (pipeline/compute.py) and how `kws data generate --speakers` sizes a corpus."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from pipeline.compute import ComputeError, _Adapter, _unpack, map_tasks, plan_workers
from pipeline.config import SyntheticSource
from pipeline.data.generate import sized_source
from pipeline.errors import DataError


class Squares:
    """A worker built once: counts its constructions and the items it saw."""

    built = 0

    def __init__(self, offset: int) -> None:
        Squares.built += 1
        self.offset = offset

    def __call__(self, item: int) -> int:
        return item * item + self.offset


def test_in_process_builds_the_worker_once_and_keeps_indices(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("KWS_WORKERS", "1")
    Squares.built = 0
    results = dict(map_tasks(Squares, (1,), [3, 1, 2]))
    assert results == {0: 10, 1: 2, 2: 5} and Squares.built == 1
    assert list(map_tasks(Squares, (0,), [])) == []


def test_plan_workers_reads_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("KWS_WORKERS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert plan_workers(10) == (2, False)  # local Ray over the machine's CPUs
    assert plan_workers(1) == (1, True)  # one task: no Ray
    assert plan_workers(10, local_default=1) == (1, True)  # features: in this process by default
    monkeypatch.setenv("KWS_WORKERS", "3")
    assert plan_workers(10) == (3, False) and plan_workers(10, workers=1) == (1, True)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert plan_workers(10, workers=1) == (1, False)  # a named cluster always runs on Ray
    monkeypatch.setenv("KWS_WORKERS", "0")
    with pytest.raises(ComputeError, match="KWS_WORKERS: Input should be greater than or equal to 1 .got '0'"):
        plan_workers(10)


class Refuses:
    def __call__(self, item: int) -> int:
        if item < 0:
            raise DataError(f"item {item}: expected >= 0")
        if item == 0:
            raise ZeroDivisionError("a bug, not a user's mistake")
        return item


def test_ray_adapter_sends_user_errors_back_as_results() -> None:
    """What a Ray worker returns for one batch: values, or the KwsError itself (Ray's wrapping would lose it)."""
    adapter = _Adapter(Refuses, ())
    out = adapter({"index": np.array([4, 5]), "item": np.array([pickle.dumps(3), pickle.dumps(-1)], dtype=object)})
    assert list(out["index"]) == [4, 5] and _unpack(out["result"][0]) == 3
    with pytest.raises(DataError, match="item -1: expected >= 0"):
        _unpack(out["result"][1])
    with pytest.raises(ZeroDivisionError):  # anything else is Ray's to report (and the stage fails)
        adapter({"index": np.array([0]), "item": np.array([pickle.dumps(0)], dtype=object)})


PARAMS = SyntheticSource(kind="synthetic", speakers=320, piper=True, kokoro_blends=64)


@pytest.mark.parametrize(
    ("speakers", "piper", "blends", "expected"),
    [
        (None, None, None, (320, True, 64)),  # params.yaml as it is
        (10, None, None, (9, True, 0)),  # 10 in all: the neural share (65/385) rounds down to Piper alone
        (100, None, None, (84, True, 15)),
        (10, False, 3, (7, False, 3)),  # neural voices named: espeak fills the rest
        (5, None, 0, (4, True, 0)),
    ],
)
def test_sized_source_makes_a_corpus_of_that_size(speakers, piper, blends, expected) -> None:
    sized = sized_source(PARAMS, speakers, piper, blends)
    assert (sized.speakers, sized.piper, sized.kokoro_blends) == expected
    if speakers is not None:
        assert sized.speakers + int(sized.piper) + sized.kokoro_blends == speakers


def test_sized_source_refuses_no_espeak_speaker() -> None:
    with pytest.raises(DataError, match="--speakers 3: the 3 neural voices leave no espeak speaker"):
        sized_source(PARAMS, 3, False, 3)


def test_only_a_corpus_worth_minutes_starts_a_local_ray() -> None:
    """Estimated one-core seconds decide the local default: params.yaml's corpus (64 Kokoro blends x 16 words) is
    worth a local Ray; 320 espeak speakers alone (22,400 clips, ~1 min) are not."""
    from pipeline.data.generate import LOCAL_RAY_MIN_S, corpus_tasks, estimate_seconds
    from pipeline.data.neural import neural_voices

    words = [f"w{i}" for i in range(35)]
    espeak = corpus_tasks(PARAMS, words)
    assert 60 < estimate_seconds(espeak, PARAMS) < LOCAL_RAY_MIN_S
    neural = [("neural", v, {w: [1, 2] for w in words[:16]}) for v in neural_voices(64, 1)[1:]]
    assert estimate_seconds([*neural, *espeak], PARAMS) > 64 * 16 * 0.7 > LOCAL_RAY_MIN_S


def test_an_unreachable_cluster_is_one_line_within_seconds(monkeypatch) -> None:
    """Ray retries an unreachable head for minutes: RAY_ADDRESS is probed first (5 s at most)."""
    import socket

    from pipeline.compute import check_reachable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ComputeError, match=f"RAY_ADDRESS=127.0.0.1:{port}: nothing answers there"):
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ComputeError, match="RAY_ADDRESS=ray://127.0.0.1:1: nothing answers there"):
        check_reachable("ray://127.0.0.1:1")
    with pytest.raises(ComputeError, match="expected host:port, ray://host:port or auto"):
        check_reachable("head-without-port")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("KWS_WORKERS", "1")  # a named cluster is used even for one worker
    with pytest.raises(ComputeError, match="nothing answers there"):
        list(map_tasks(Squares, (0,), [1, 2]))
