"""Stream a long recording through any scoring function, then through RecognizeCommands.

Window convention: window i covers samples [i * stride, i * stride + clip) and is stamped with its END,
(i * stride + clip) * 1000 / sample_rate ms, the moment a live stream could score it (TF's Android and
micro_speech apps pass the current time; TF's test_streaming_accuracy stamps the START, and its truth is the
clip start, so the alignment is the same: see pipeline.stream.recording). Only whole windows are scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pipeline.stream.recognize import Detection, detect

if TYPE_CHECKING:
    from pipeline.config import StreamParams

ScoreFn = Callable[[np.ndarray], np.ndarray]  # float32 windows [B, S] -> scores [B, C] (e.g. softmax)
SequenceFn = Callable[..., tuple[np.ndarray, np.ndarray]]  # (audio [S], progress) -> (scores [N, C], END times ms [N])
Progress = Callable[[int, int], None]  # (done, total) windows or vectors, for a progress line on long recordings


def window_count(samples: int, clip_samples: int, stride_samples: int) -> int:
    """How many whole windows of `clip_samples`, every `stride_samples`, fit in `samples`."""
    return 0 if samples < clip_samples else 1 + (samples - clip_samples) // stride_samples


def stream_scores(
    audio: np.ndarray,
    score_fn: ScoreFn,
    clip_samples: int,
    stride_samples: int,
    batch_size: int = 256,
    *,
    sample_rate: int = 16000,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N, C] float32 of every whole window and its END time [N] in ms, scored in batches."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio [samples], got shape {audio.shape}")
    if clip_samples < 1 or stride_samples < 1 or batch_size < 1:
        raise ValueError("clip_samples, stride_samples and batch_size must be positive")
    n = window_count(audio.shape[0], clip_samples, stride_samples)
    if n == 0:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(audio, clip_samples)[::stride_samples]  # a view, no copy
    parts: list[np.ndarray] = []
    for start in range(0, n, batch_size):
        batch = np.ascontiguousarray(windows[start : start + batch_size])
        scores = np.asarray(score_fn(batch), dtype=np.float32)
        if scores.ndim != 2 or scores.shape[0] != batch.shape[0] or (parts and scores.shape[1] != parts[0].shape[1]):
            raise ValueError(f"score_fn returned shape {scores.shape} for a batch of {batch.shape[0]} windows")
        parts.append(scores)
        if progress is not None:
            progress(min(start + batch_size, n), n)
    times_ms = (np.arange(n, dtype=np.float64) * stride_samples + clip_samples) * 1000.0 / sample_rate
    return np.concatenate(parts), times_ms


def stream_mode(settings: StreamParams, sequence_fn: SequenceFn | None) -> str:
    """`sequence` when the settings ask for it and the model can (a speech-embedding model), else `windows`."""
    return "sequence" if sequence_fn is not None and settings.mode == "sequence" else "windows"


def recording_scores(
    audio: np.ndarray,
    score_fn: ScoreFn,
    settings: StreamParams,
    sample_rate: int,
    *,
    clip_samples: int | None = None,
    batch_size: int = 256,
    sequence_fn: SequenceFn | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, C], END times [N] ms) of a recording. With `sequence_fn` (a speech-embedding model, see
    pipeline.stream.sequence) and `settings.mode` sequence, the scores come from the shared 80 ms embedding
    sequence; otherwise windows of `clip_samples` (default one second) are scored every `clip_stride_ms`."""
    if stream_mode(settings, sequence_fn) == "sequence":
        return sequence_fn(np.asarray(audio, np.float32), progress)
    clip = int(clip_samples or sample_rate)
    stride = max(1, round(settings.clip_stride_ms * sample_rate / 1000.0))
    return stream_scores(audio, score_fn, clip, stride, batch_size, sample_rate=sample_rate, progress=progress)


def recognize(scores: np.ndarray, times_ms: np.ndarray, labels: list[str], settings: StreamParams) -> list[Detection]:
    """RecognizeCommands (`settings`) over scores [N, C] at END times [N] ms; [] for no scores."""
    if scores.shape[0] == 0:
        return []
    return detect(
        scores,
        times_ms,
        labels,
        average_window_ms=settings.average_window_ms,
        detection_threshold=settings.detection_threshold,
        suppression_ms=settings.suppression_ms,
        minimum_count=settings.minimum_count,
        rearm=settings.rearm,
    )


def recognize_stream(
    audio: np.ndarray,
    score_fn: ScoreFn,
    labels: list[str],
    settings: StreamParams,
    sample_rate: int,
    *,
    clip_samples: int | None = None,
    batch_size: int = 256,
    sequence_fn: SequenceFn | None = None,
) -> list[Detection]:
    """Detections in `audio`: `recording_scores` then `recognize`."""
    scores, times_ms = recording_scores(audio, score_fn, settings, sample_rate, clip_samples=clip_samples,
                                        batch_size=batch_size, sequence_fn=sequence_fn)  # fmt: skip
    return recognize(scores, times_ms, labels, settings)
