"""`kws listen`'s chunked scoring (pipeline.stream.live) gives exactly the detections of `kws stream`, in both
streaming modes, whatever the chunk size; raw PCM is cut into chunks without losing a sample."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline.config import StreamParams
from pipeline.inference import Predictor
from pipeline.stream.live import listen, pcm_chunks
from pipeline.stream.sequence import sequence_scores

RATE = 16000
LABELS = ["_silence_", "_unknown_", "beep"]
HOP, SPAN, WINDOW = 1280, 12512, 4


def _scores(loudness: np.ndarray) -> np.ndarray:
    """[N] loudness -> [N, 3] scores: quiet is silence, a loud beep is `beep`."""
    beep = np.clip(loudness * 20, 0, 1)
    return np.stack([1 - beep, np.zeros_like(beep), beep], axis=1).astype(np.float32)


def _windows_predictor() -> Predictor:
    return Predictor("fake", None, LABELS, RATE, RATE, lambda clips: _scores(np.sqrt((clips**2).mean(axis=1))))


def _sequence_predictor() -> Predictor:
    def embed(audio: np.ndarray) -> np.ndarray:  # one 1-d vector per HOP: the RMS of its SPAN
        audio = audio[0]
        count = 1 + (len(audio) - SPAN) // HOP
        return np.array([[[np.sqrt((audio[j * HOP : j * HOP + SPAN] ** 2).mean())] for j in range(count)]], np.float32)

    def sequence_fn(audio, progress=None):
        return sequence_scores(audio, embed, lambda w: _scores(w.mean(axis=(1, 2))), window_vectors=WINDOW, hop=HOP,
                               span=SPAN, sample_rate=RATE, progress=progress)  # fmt: skip

    predictor = _windows_predictor()
    predictor.sequence_fn = sequence_fn
    predictor.stream_geometry = {"hop": HOP, "span": SPAN, "window_vectors": WINDOW}
    return predictor


def _recording() -> np.ndarray:
    rng = np.random.default_rng(1)
    audio = 0.001 * rng.standard_normal(12 * RATE).astype(np.float32)
    t = np.arange(RATE // 2) / RATE
    for start_s in (2.0, 5.5, 9.0):
        start = int(start_s * RATE)
        audio[start : start + len(t)] += 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return audio


@pytest.mark.parametrize("mode", ["windows", "sequence"])
@pytest.mark.parametrize("chunk", [1600, 1001])
def test_listen_hears_what_stream_hears(mode, chunk):
    predictor = _sequence_predictor() if mode == "sequence" else _windows_predictor()
    settings = StreamParams(mode=mode, detection_threshold=0.5, minimum_count=2)
    audio = _recording()
    expected = predictor.detect(audio, settings)
    assert [d.label for d in expected] == ["beep", "beep", "beep"] and predictor.stream_mode(settings) == mode
    heard = []
    ticks = iter(range(10_000))
    report = listen(predictor, (audio[i : i + chunk] for i in range(0, len(audio), chunk)), RATE, settings, heard.append,
                    clock=lambda: next(ticks) / 1000.0)  # fmt: skip
    assert heard == report.detections == expected
    assert report.chunks == -(-len(audio) // chunk) and report.seconds == pytest.approx(12.0)
    assert report.latencies_ms == pytest.approx([1.0] * report.chunks) and report.median_ms == pytest.approx(1.0)


def test_pcm_chunks_keep_every_sample():
    samples = np.arange(-5000, 5003, dtype="<i2")
    chunks = list(pcm_chunks(io.BytesIO(samples.tobytes() + b"\x01"), 1000))  # a dangling odd byte is dropped
    assert [len(c) for c in chunks] == [1000] * 10 + [3]
    np.testing.assert_array_equal(np.concatenate(chunks), samples.astype(np.float32) / 32768.0)
