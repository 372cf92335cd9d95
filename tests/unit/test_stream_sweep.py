"""The detection-threshold sweep: matched % and false alarms per hour per threshold, on hand-built score streams."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import StreamParams
from pipeline.stream.sweep import (
    best_smoothing,
    false_accepts_per_hour,
    keyword_sweep,
    operating_point,
    plot_sweep,
    smoothing_grid,
)

NAMES = ["_silence_", "_unknown_", "yes", "no"]
STEP_MS = 80.0
SETTINGS = StreamParams(average_window_ms=400, suppression_ms=500, minimum_count=3, time_tolerance_ms=1000)


def stream(events: list[tuple[float, int, float]], seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N, 4] every 80 ms: silence everywhere, except `score` for class `index` during 1 s from `start_ms`."""
    times = np.arange(STEP_MS, seconds * 1000 + 1, STEP_MS)
    scores = np.zeros((len(times), len(NAMES)))
    scores[:, 0] = 1.0
    for start, index, score in events:
        inside = (times >= start) & (times < start + 1000)
        scores[inside] = 0.0
        scores[inside, index] = score
        scores[inside, 0] = 1.0 - score
    return scores, times


def test_sweep_trades_matched_keywords_against_false_alarms():
    # two keywords said (score 0.9 and 0.65) and one spurious "no" at 0.55 with nothing said: 36 s = 0.01 h
    scores, times = stream([(2000, 2, 0.9), (10000, 3, 0.65), (20000, 3, 0.55)], 36)
    truth = pd.DataFrame({"label": ["yes", "no"], "time_ms": [3000.0, 11000.0]})
    sweep = keyword_sweep(scores, times, NAMES, SETTINGS, truth, 36_000, thresholds=[0.5, 0.6, 0.7, 0.95])
    assert sweep["threshold"].tolist() == [0.5, 0.6, 0.7, 0.95]
    assert sweep["matched_percentage"].tolist() == [100.0, 100.0, 50.0, 0.0]
    assert sweep["correct_percentage"].tolist() == [100.0, 100.0, 50.0, 0.0]
    assert sweep["false_alarms_per_hour"].tolist() == [100.0, 0.0, 0.0, 0.0]  # one false alarm in 0.01 h

    assert operating_point(sweep, 10) == {"threshold": 0.6, "matched_percentage": 100.0, "correct_percentage": 100.0,
                                          "false_alarms_per_hour": 0.0}  # fmt: skip
    assert operating_point(sweep, 150)["threshold"] == 0.6  # ties on matched %: the higher threshold
    assert operating_point(sweep.iloc[:1], 10) is None  # no threshold meets the budget


def test_false_accepts_count_every_detection_over_all_recordings():
    first = stream([(1000, 2, 0.8), (5000, 3, 0.6)], 18)  # 18 s + 18 s = 0.01 h
    second = stream([(3000, 2, 0.9)], 18)
    per_hour = false_accepts_per_hour([first, second], NAMES, SETTINGS, 0.01, thresholds=[0.5, 0.7, 0.85, 0.95])
    assert per_hour == [300.0, 200.0, 100.0, 0.0]
    with pytest.raises(ValueError, match="positive length"):
        false_accepts_per_hour([first], NAMES, SETTINGS, 0.0)


def test_sweep_plot_is_written(tmp_path):
    sweep = pd.DataFrame({"threshold": [0.5, 0.7], "matched_percentage": [90.0, 80.0], "correct_percentage": [88.0, 79.0],
                          "false_alarms_per_hour": [30.0, 0.0], "speech_free_false_alarms_per_hour": [2.0, 0.0]})  # fmt: skip
    out = tmp_path / "sweep.png"
    plot_sweep(sweep, out, "title")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_smoothing_grid_chooses_the_window_on_validation_and_reports_testing():
    # A word holds its score for 1 s. On validation a 480 ms blip of "no" at 0.95 is noise: a 400 ms window
    # averages it above every threshold (a false alarm), a 1,000 ms window dilutes it under silence. The testing
    # recording has no blip and a weaker second keyword (0.7), which a threshold of 0.8 misses.
    def recording(second_score: float, blip: bool) -> tuple:
        events = [(2000, 2, 0.9), (8000, 3, second_score)] + ([(20000, 3, 0.95)] if blip else [])
        scores, times = stream(events, 36)
        if blip:  # shorten the blip to 480 ms
            tail = (times >= 20480) & (times < 21000)
            scores[tail] = 0.0
            scores[tail, 0] = 1.0
        truth = pd.DataFrame({"label": ["yes", "no"], "time_ms": [3000.0, 9000.0]})
        return scores, times, truth, 36_000.0

    budget = SETTINGS.model_copy(update={"max_false_alarms_per_hour": 50})  # 36 s: one false alarm is 100/h
    validation, testing = recording(0.9, blip=True), recording(0.7, blip=False)
    grid = smoothing_grid(validation, testing, NAMES, budget, [400, 1000], thresholds=[0.4, 0.6, 0.8])
    assert grid["average_window_ms"].tolist() == [400.0, 1000.0]
    short, long = grid.iloc[0], grid.iloc[1]
    assert np.isnan(short["threshold"])  # the validation blip breaks the budget at every threshold (testing would not)
    assert long["threshold"] == 0.8 and long["validation_matched_percentage"] == 100.0  # ties: the higher threshold
    assert long["matched_percentage"] == 50.0 and long["false_alarms_per_hour"] == 0.0  # testing at 0.8: "no" missed
    assert best_smoothing(grid)["average_window_ms"] == 1000.0
    assert best_smoothing(grid.iloc[:1]) is None
    tied = pd.concat([grid.iloc[[1]].assign(average_window_ms=750.0), grid.iloc[[1]]], ignore_index=True)
    assert best_smoothing(tied)["average_window_ms"] == 750.0  # equal on validation: the shorter window
    with pytest.raises(ValueError, match="at least one"):
        smoothing_grid(validation, testing, NAMES, budget, [])
    with pytest.raises(ValueError, match="finite and > 0"):
        smoothing_grid(validation, testing, NAMES, budget, [500, float("nan"), 0])


def test_default_grid_finds_the_operating_point_of_a_confident_model():
    # keywords score 0.99, an other word is taken for "no" at 0.965: the only thresholds that keep every keyword and
    # drop the false alarm lie in (0.965, 0.99]; a grid stopping at 0.95 (the old one) had none within 10/h
    scores, times = stream([(2000, 2, 0.99), (10000, 3, 0.99), (20000, 3, 0.965)], 36)
    truth = pd.DataFrame({"label": ["yes", "no"], "time_ms": [3000.0, 11000.0]})
    sweep = keyword_sweep(scores, times, NAMES, SETTINGS, truth, 36_000)
    assert sweep["threshold"].iloc[0] == 0.3 and sweep["threshold"].iloc[-1] == 0.99
    assert np.allclose(np.diff(sweep["threshold"]), 0.01)
    best = operating_point(sweep, 10)
    assert best == {"threshold": 0.99, "matched_percentage": 100.0, "correct_percentage": 100.0, "false_alarms_per_hour": 0.0}
    assert operating_point(sweep[sweep["threshold"] <= 0.95], 10) is None
