"""TensorFlow's streaming accuracy statistics (accuracy_utils CalculateAccuracyStats), over whole recordings.

For each detection, in time order, the candidate truth entries are those with |truth - detection| <= tolerance
(both ends inclusive, as TF). One candidate is picked: the nearest in time (`pick="nearest"`, ties -> the
earlier), or TF's exact rule, the earliest candidate (`pick="earliest"`). Then, as TF:

* no candidate                                   -> false positive;
* a keyword entry with the same label not yet matched -> correct;
* any other keyword entry (wrong label, or already matched) -> wrong;
and the picked keyword entry counts as matched (whatever the label). `matched` counts distinct entries (TF's C++
set; the Python port double-counts), keyed by row, not by time.

Unknown-word entries (any label beginning with '_', i.e. `_unknown_`) are words that should NOT be detected:
they are candidates like any entry (so a detection fired by an unknown word is attributed to it rather than to
a keyword further away), and a detection that picks one is a false positive (also counted in
`unknown_false_positives`). They are not in the denominator: every percentage is over the keyword entries only.
(TF keeps them in both, because its stream also reports `_unknown_` as a command; ours never does, so with TF's
denominator a perfect model could score at most 1 - unknown_fraction.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.stream.recognize import Detection

MS_PER_HOUR = 3_600_000.0


def _percent(count: int, total: int) -> float:
    return 100.0 * count / total if total else 0.0


def match_detections(
    detections: Sequence[Detection],
    truth: pd.DataFrame,
    time_tolerance_ms: float,
    *,
    duration_ms: float | None = None,
    pick: Literal["nearest", "earliest"] = "nearest",
) -> dict:
    """Counts and percentages of TF's streaming accuracy; `duration_ms` (default: the latest time seen) sets FA/h."""
    if time_tolerance_ms < 0:
        raise ValueError(f"time_tolerance_ms must be >= 0, got {time_tolerance_ms}")
    if pick not in ("nearest", "earliest"):
        raise ValueError(f"pick must be 'nearest' or 'earliest', got {pick!r}")
    bad = sorted({d.label for d in detections if d.label.startswith("_")})
    if bad:
        raise ValueError(f"detections must be commands, got labels {bad}")
    order = np.argsort(truth["time_ms"].to_numpy(np.float64), kind="stable")
    times = truth["time_ms"].to_numpy(np.float64)[order]
    names = truth["label"].astype(str).to_numpy()[order]
    is_keyword = np.array([not n.startswith("_") for n in names], dtype=bool)

    matched: set[int] = set()
    correct = wrong = false_pos = unknown_fp = 0
    for det in sorted(detections, key=lambda d: d.time_ms):
        lo = np.searchsorted(times, det.time_ms - time_tolerance_ms, side="left")
        hi = np.searchsorted(times, det.time_ms + time_tolerance_ms, side="right")
        if lo >= hi:
            false_pos += 1
            continue
        i = int(lo + np.argmin(np.abs(times[lo:hi] - det.time_ms))) if pick == "nearest" else int(lo)
        if not is_keyword[i]:
            false_pos += 1
            unknown_fp += 1
            continue
        if names[i] == det.label and i not in matched:
            correct += 1
        else:
            wrong += 1
        matched.add(i)

    keywords = int(is_keyword.sum())
    if duration_ms is None:
        duration_ms = max([0.0, *times.tolist(), *(d.time_ms for d in detections)])
    hours = duration_ms / MS_PER_HOUR
    return {
        "truth_keywords": keywords,
        "truth_unknown": int(len(names) - keywords),
        "detections": len(detections),
        "matched": len(matched),
        "correct": correct,
        "wrong": wrong,
        "false_positives": false_pos,
        "unknown_false_positives": unknown_fp,
        "matched_percentage": _percent(len(matched), keywords),
        "correct_percentage": _percent(correct, keywords),
        "wrong_percentage": _percent(wrong, keywords),
        "false_positive_percentage": _percent(false_pos, keywords),
        "false_alarms_per_hour": false_pos / hours if hours > 0 else 0.0,
        "duration_ms": float(duration_ms),
    }
