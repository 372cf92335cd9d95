"""TensorFlow's RecognizeCommands: smooth per-window scores over time and report new commands (numpy only).

With `rearm="other_command"`, faithful to tensorflow/examples/speech_commands/recognize_commands.{py,cc}:

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

Our deviations:

* a new command whose label begins with '_' (`_silence_`, `_unknown_`) updates the state exactly as in TF but is
  never returned as a Detection (TF's test_streaming_accuracy drops only `_silence_`);
* `rearm="release"` (the default; `rearm="other_command"` is TF's rule): the previous command's label may become a
  new command again once it has been *released*, i.e. once a decided result's averaged top label was another
  one or its score was not above the threshold. TF's rule waits for another label to pass the threshold, which
  in quiet audio `_silence_` does between words; in noise nothing may, so the second of two equal keywords
  2 s apart was never reported (the evaluate stage's testing recording, noise ~12 dB under the words: 33-47
  of 1,261 keywords lost this way, 2.6-3.7 pt of the matched %, at the same false alarms; docs/experiments.md).
  Suppression (`suppression_ms`) applies as in TF.

Times must be non-decreasing against the latest result (TF only checks against the oldest one kept).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import numpy as np

SILENCE = "_silence_"  # same string as pipeline.config.SILENCE_LABEL; kept literal so this module is numpy-only
REARM_RULES = ("release", "other_command")  # pipeline.config.StreamParams.rearm's values, in the module doc's terms


def _check_rearm(rearm: str) -> str:
    if rearm not in REARM_RULES:
        raise ValueError(f"rearm must be one of {list(REARM_RULES)}, got {rearm!r}")
    return rearm


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
        rearm: str = "release",
    ):
        if not labels:
            raise ValueError("labels must not be empty")
        if not (average_window_ms > 0 and suppression_ms >= 0 and minimum_count >= 1):  # NaN fails too
            raise ValueError("need average_window_ms > 0, suppression_ms >= 0 and minimum_count >= 1")
        self.labels = list(labels)
        self.average_window_ms = float(average_window_ms)
        self.detection_threshold = float(detection_threshold)
        self.suppression_ms = float(suppression_ms)
        self.minimum_count = int(minimum_count)
        self.rearm = _check_rearm(rearm)
        self.reset()

    def reset(self) -> None:
        """Forget every result and the previous command."""
        self._results: deque[tuple[float, np.ndarray]] = deque()
        self._latest_ms = -math.inf
        self.previous_label = SILENCE
        self.previous_time_ms = -math.inf
        self.released = True  # the previous command's label may fire again (rearm="release"; see the module doc)
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
        average = _in_order_sum(s for _, s in self._results) / count
        index = int(np.argmax(average))
        label, score = self.labels[index], float(average[index])
        self.top = (label, score)

        if self.previous_label == SILENCE or self.previous_time_ms == -math.inf:
            since = math.inf
        else:
            since = time_ms - self.previous_time_ms
        above = score > self.detection_threshold
        if label != self.previous_label or not above:
            self.released = True
        again = self.rearm == "release" and self.released
        if above and (label != self.previous_label or again) and since > self.suppression_ms:
            self.previous_label, self.previous_time_ms, self.released = label, time_ms, False
            if not label.startswith("_"):
                return Detection(label, time_ms, score)
        return None


def _in_order_sum(rows) -> np.ndarray:
    """The rows added one after another, oldest first (np.sum may pair them up, which rounds differently)."""
    rows = iter(rows)
    total = np.array(next(rows), dtype=np.float64)
    for row in rows:
        total += row
    return total


@dataclasses.dataclass(frozen=True)
class Smoothed:
    """RecognizeCommands' averaged top label of every result, before any threshold is applied.

    times_ms [N]; index [N] (int, -1 where no decision is made: fewer than `minimum_count` results kept or
    spanning under a quarter window); score [N] (float64, the averaged score of `index`, NaN where undecided).
    Only the threshold and the suppression time decide which of these become commands (`commands`), so a
    threshold sweep smooths once."""

    times_ms: np.ndarray
    index: np.ndarray
    score: np.ndarray


def smooth(scores: np.ndarray, times_ms: np.ndarray, average_window_ms: float = 500.0,
           minimum_count: int = 4) -> Smoothed:  # fmt: skip
    """RecognizeCommands' averaging over scores [N, C] at times_ms [N] in one pass, exactly as `process` does it:
    the same kept results, summed in the same order in float64, so the averages are bit-identical.
    Raises ValueError for mismatched shapes, non-finite or decreasing times, or bad settings."""
    scores = np.asarray(scores, dtype=np.float64)
    times = np.asarray(times_ms, dtype=np.float64).reshape(-1)
    if not (average_window_ms > 0 and minimum_count >= 1):  # NaN fails too
        raise ValueError("need average_window_ms > 0 and minimum_count >= 1")
    if scores.shape[:1] == (0,) and times.size == 0:  # no whole window in the audio: nothing to decide
        return Smoothed(times, np.zeros(0, dtype=int), np.zeros(0))
    if scores.ndim != 2 or scores.shape[0] != times.shape[0]:
        raise ValueError(f"expected scores [N, C] and times [N], got {scores.shape} and {times.shape}")
    minimum_count = int(minimum_count)  # as RecognizeCommands keeps it
    if not np.all(np.isfinite(times)):
        raise ValueError(f"time_ms must be finite, got {times[~np.isfinite(times)][0]}")
    back = np.flatnonzero(np.diff(times) < 0)
    if back.size:
        i = int(back[0])
        raise ValueError(f"results must come in time order: got {times[i + 1]} ms after {times[i]} ms")
    n = times.shape[0]
    window = float(average_window_ms)
    last = np.arange(n)
    start = np.searchsorted(times, times - window, side="left")  # the first result not older than the window
    count = last - start + 1
    decided = (count >= minimum_count) & (times - times[start] >= window / 4)
    total = scores[start].copy()
    for offset in range(1, int(count.max(initial=1))):  # row by row in time order, as `process` adds them
        rows = np.flatnonzero(offset < count)
        total[rows] += scores[start[rows] + offset]
    average = total / count[:, None]
    index = np.where(decided, np.argmax(average, axis=1), -1)
    score = np.where(decided, average[np.arange(n), np.maximum(index, 0)], np.nan)
    return Smoothed(times, index, score)


def commands(smoothed: Smoothed, labels: list[str], detection_threshold: float = 0.7,
             suppression_ms: float = 500.0, rearm: str = "release") -> list[Detection]:  # fmt: skip
    """The Detections RecognizeCommands reports for `smoothed` at this threshold (same state machine as
    `process`: only results scoring above the threshold can make a command, so only those are visited; a decided
    result under it between two visited ones releases the previous label, as in `process`)."""
    if suppression_ms < 0:
        raise ValueError("need suppression_ms >= 0")
    rearm, threshold = _check_rearm(rearm), float(detection_threshold)
    decided = smoothed.index >= 0
    above = decided & (smoothed.score > threshold)
    below_so_far = np.cumsum(decided & ~above)  # decided results not above the threshold, up to each result
    previous_label, previous_ms, released, last, found = SILENCE, -math.inf, True, -1, []
    for i in np.flatnonzero(above):
        label, time_ms = labels[smoothed.index[i]], float(smoothed.times_ms[i])
        if label != previous_label or (last >= 0 and below_so_far[i] > below_so_far[last]):
            released = True
        last = i
        since = math.inf if previous_label == SILENCE or previous_ms == -math.inf else time_ms - previous_ms
        if (label != previous_label or (rearm == "release" and released)) and since > suppression_ms:
            previous_label, previous_ms, released = label, time_ms, False
            if not label.startswith("_"):
                found.append(Detection(label, time_ms, float(smoothed.score[i])))
    return found


def detect(scores: np.ndarray, times_ms: np.ndarray, labels: list[str], average_window_ms: float = 500.0,
           detection_threshold: float = 0.7, suppression_ms: float = 500.0, minimum_count: int = 4,
           rearm: str = "release") -> list[Detection]:  # fmt: skip
    """What a fresh RecognizeCommands(labels, ...) fed scores [N, C] at times_ms [N] reports (`smooth` then
    `commands`: the same Detections as calling `process` row by row, tens of times faster)."""
    smoothed = smooth(check_width(scores, labels), times_ms, average_window_ms, minimum_count)
    return commands(smoothed, labels, detection_threshold, suppression_ms, rearm)


def check_width(scores: np.ndarray, labels: list[str]) -> np.ndarray:
    """`scores` as an array, after checking it has one column per label (an empty [0, *] array passes).
    Raises ValueError for no labels or another number of columns."""
    if not labels:
        raise ValueError("labels must not be empty")
    scores = np.asarray(scores)
    if scores.ndim == 2 and scores.shape[0] and scores.shape[1] != len(labels):
        raise ValueError(f"expected {len(labels)} scores, got {scores.shape[1]}")
    return scores
