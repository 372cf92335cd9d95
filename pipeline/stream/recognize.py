"""TensorFlow's RecognizeCommands: smooth per-window scores over time and report new commands (numpy only).

Faithful to tensorflow/examples/speech_commands/recognize_commands.{py,cc}:

* each result (scores of one window, time_ms) is appended; results older than `time_ms - average_window_ms`
  are dropped (a result exactly `average_window_ms` old is kept);
* nothing is decided while fewer than `minimum_count` results are kept, or while they span less than
  `average_window_ms / 4` (TF's second guard);
* the kept scores are averaged and the top label taken (ties: the lower class index);
* that label is a *new command* iff its averaged score is strictly above `detection_threshold` AND it differs
  from the previous new command's label AND more than `suppression_ms` passed since that command (strictly;
  when the previous command was `_silence_`, or there was none, the time is taken as infinite). A new command
  becomes the "previous" one, so the same word repeated is reported again only after another label
  (in practice `_silence_` between words) has itself become a new command.

Our one deviation: a new command whose label begins with '_' (`_silence_`, `_unknown_`) updates the state
exactly as in TF but is never returned as a Detection (TF's test_streaming_accuracy drops only `_silence_`).
Times must be non-decreasing against the latest result (TF only checks against the oldest one kept).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

SILENCE = "_silence_"  # same string as pipeline.config.SILENCE_LABEL; kept literal so this module is numpy-only


@dataclasses.dataclass(frozen=True)
class Detection:
    """One reported command: its label, the time of the result that triggered it, its averaged score."""

    label: str
    time_ms: float
    score: float


class RecognizeCommands:
    """Stateful smoother over a stream of (scores, time_ms) results; feed results in time order."""

    def __init__(
        self,
        labels: list[str],
        average_window_ms: float = 500.0,
        detection_threshold: float = 0.7,
        suppression_ms: float = 500.0,
        minimum_count: int = 4,
    ):
        if not labels:
            raise ValueError("labels must not be empty")
        if average_window_ms <= 0 or suppression_ms < 0 or minimum_count < 1:
            raise ValueError("need average_window_ms > 0, suppression_ms >= 0 and minimum_count >= 1")
        self.labels = list(labels)
        self.average_window_ms = float(average_window_ms)
        self.detection_threshold = float(detection_threshold)
        self.suppression_ms = float(suppression_ms)
        self.minimum_count = int(minimum_count)
        self.reset()

    def reset(self) -> None:
        """Forget every result and the previous command."""
        self._results: deque[tuple[float, np.ndarray]] = deque()
        self._latest_ms = -math.inf
        self.previous_label = SILENCE
        self.previous_time_ms = -math.inf
        self.top: tuple[str, float] | None = None  # the latest averaged top label and score, if one was decided

    def process(self, scores: np.ndarray, time_ms: float) -> Detection | None:
        """Add one window's scores [num_classes] at `time_ms`; return a Detection if a new command starts."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if scores.shape[0] != len(self.labels):
            raise ValueError(f"expected {len(self.labels)} scores, got {scores.shape[0]}")
        time_ms = float(time_ms)
        if not math.isfinite(time_ms):
            raise ValueError(f"time_ms must be finite, got {time_ms}")
        if time_ms < self._latest_ms:
            raise ValueError(f"results must come in time order: got {time_ms} ms after {self._latest_ms} ms")
        self._latest_ms = time_ms
        self._results.append((time_ms, scores))
        limit = time_ms - self.average_window_ms
        while self._results[0][0] < limit:
            self._results.popleft()

        count = len(self._results)
        if count < self.minimum_count or time_ms - self._results[0][0] < self.average_window_ms / 4:
            self.top = None
            return None
        average = np.mean([s for _, s in self._results], axis=0)
        index = int(np.argmax(average))
        label, score = self.labels[index], float(average[index])
        self.top = (label, score)

        if self.previous_label == SILENCE or self.previous_time_ms == -math.inf:
            since = math.inf
        else:
            since = time_ms - self.previous_time_ms
        if score > self.detection_threshold and label != self.previous_label and since > self.suppression_ms:
            self.previous_label, self.previous_time_ms = label, time_ms
            if not label.startswith("_"):
                return Detection(label, time_ms, score)
        return None


def detect(scores: np.ndarray, times_ms: np.ndarray, labels: list[str], **settings) -> list[Detection]:
    """Run a fresh RecognizeCommands(labels, **settings) over scores [N, C] at times_ms [N]."""
    scores = np.asarray(scores)
    times_ms = np.asarray(times_ms, dtype=np.float64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != times_ms.shape[0]:
        raise ValueError(f"expected scores [N, C] and times [N], got {scores.shape} and {times_ms.shape}")
    recognizer = RecognizeCommands(labels, **settings)
    found = (recognizer.process(row, t) for row, t in zip(scores, times_ms, strict=True))
    return [d for d in found if d is not None]
