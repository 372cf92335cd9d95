"""Live keyword spotting on chunks of audio as they arrive (`kws listen`): the scoring and RecognizeCommands
smoothing of `kws stream`, fed chunk by chunk.

Each chunk is appended to a short buffer that starts at a multiple of the scoring step (the window stride, or
the embedding hop in sequence mode), so the results — and their END time stamps — are those `kws stream` gives
for the same recording (sequence mode: the mel floor is taken per buffer instead of per 500-vector chunk).
Only results newer than the last one fed go to the recognizer; then the buffer keeps the last context it needs.
Chunks come from raw 16-bit PCM (stdin: `arecord -f S16_LE -r 16000 -c 1 -t raw | kws listen --input -`) or
from the default input device through `sounddevice` (optional; needs PortAudio).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from pipeline.audio import PCM16_SCALE
from pipeline.errors import KwsError
from pipeline.stream.recognize import Detection, RecognizeCommands

if TYPE_CHECKING:
    from pipeline.config import StreamParams
    from pipeline.inference import Predictor


@dataclass
class ListenReport:
    """Chunks scored, seconds of audio heard, and the scoring time of each chunk (ms)."""

    chunks: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else 0.0

    @property
    def p90_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 90)) if self.latencies_ms else 0.0

    @property
    def max_ms(self) -> float:
        return float(max(self.latencies_ms, default=0.0))


def pcm_chunks(stream: BinaryIO, chunk_samples: int) -> Iterator[np.ndarray]:
    """Float32 chunks [chunk_samples] (the last one shorter) of raw 16-bit little-endian mono PCM until EOF."""
    need = 2 * int(chunk_samples)
    pending = b""
    while True:
        data = stream.read(need - len(pending))
        if not data:
            break
        pending += data
        if len(pending) >= need:
            yield np.frombuffer(pending[:need], "<i2").astype(np.float32) / PCM16_SCALE
            pending = pending[need:]
    whole = len(pending) - len(pending) % 2
    if whole:
        yield np.frombuffer(pending[:whole], "<i2").astype(np.float32) / PCM16_SCALE


def microphone_chunks(sample_rate: int, chunk_samples: int) -> Iterator[np.ndarray]:
    """Float32 chunks from the default input device (sounddevice + PortAudio); KwsError when neither is there."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:  # OSError: the module is there, the PortAudio library is not
        raise KwsError(f"no microphone input: sounddevice/PortAudio unavailable ({error}); pipe raw 16-bit PCM "
                       "instead: arecord -f S16_LE -r 16000 -c 1 -t raw | kws listen --input -") from None  # fmt: skip
    try:
        with sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32", blocksize=chunk_samples) as mic:
            while True:
                data, _overflowed = mic.read(chunk_samples)
                yield np.asarray(data, np.float32).reshape(-1)
    except sounddevice.PortAudioError as error:
        raise KwsError(f"microphone: {error}") from None


def _context(predictor: Predictor, settings: StreamParams) -> tuple[int, int]:
    """(step, keep) in samples: buffers start at multiples of `step` and keep `keep` samples of context."""
    if predictor.stream_mode(settings) == "sequence":
        geometry = predictor.stream_geometry
        return geometry["hop"], geometry["span"] + (geometry["window_vectors"] - 1) * geometry["hop"]
    return max(1, round(settings.clip_stride_ms * predictor.sample_rate / 1000.0)), predictor.clip_samples


def listen(
    predictor: Predictor,
    chunks: Iterable[np.ndarray],
    input_rate: int,
    settings: StreamParams,
    on_detection: Callable[[Detection], None] = lambda detection: None,
    clock: Callable[[], float] = time.perf_counter,
) -> ListenReport:
    """Score chunks of mono float32 audio at `input_rate` as they arrive; call `on_detection` for each new command.

    Detections carry the END time (ms since the first sample) of the result that triggered them."""
    rate = predictor.sample_rate
    step, keep = _context(predictor, settings)
    recognizer = RecognizeCommands(predictor.labels, average_window_ms=settings.average_window_ms,
                                   detection_threshold=settings.detection_threshold,
                                   suppression_ms=settings.suppression_ms, minimum_count=settings.minimum_count,
                                   rearm=settings.rearm)  # fmt: skip
    resampler = None
    if input_rate != rate:
        import soxr

        resampler = soxr.ResampleStream(input_rate, rate, 1, dtype="float32")
    report = ListenReport()
    buffer = np.zeros(0, np.float32)
    offset = 0  # absolute index of buffer[0], a multiple of `step`
    last_ms = -np.inf
    for chunk in chunks:
        start = clock()
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        report.seconds += len(chunk) / input_rate
        if resampler is not None:
            chunk = resampler.resample_chunk(chunk)
        buffer = np.concatenate([buffer, chunk])
        if len(buffer) >= min(keep, predictor.clip_samples):
            scores, times_ms = predictor.stream_scores(buffer, settings)
            times_ms = times_ms + offset * 1000.0 / rate
            for row, at in zip(scores, times_ms, strict=True):
                if at > last_ms:
                    found = recognizer.process(row, float(at))
                    last_ms = at
                    if found is not None:
                        report.detections.append(found)
                        on_detection(found)
        drop = max(0, len(buffer) - keep)
        drop -= drop % step
        buffer, offset = buffer[drop:], offset + drop
        report.chunks += 1
        report.latencies_ms.append((clock() - start) * 1000.0)
    return report
