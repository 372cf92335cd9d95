"""Detection threshold sweep: keywords found vs false accepts per hour, the operating curve of a keyword spotter.

The streaming scores of a recording are computed once, and so is RecognizeCommands' averaging of them
(`pipeline.stream.recognize.smooth`); only its decisions (`commands`) run again per threshold.
Three recordings give one curve each (see pipeline.evaluate.run): the keyword recording (matched % and false
alarms per hour), speech-free real audio (`_background_noise_`: every detection is a false accept) and a
recording of non-keyword speech (every detection is a false accept). Reporting false accepts per hour at a
given recall follows the wake-word literature (e.g. Sainath & Parada, Interspeech 2015; TF's
test_streaming_accuracy reports the same two numbers at one threshold).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.stream.accuracy import MS_PER_HOUR, match_detections
from pipeline.stream.recognize import Smoothed, check_width, commands, smooth

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.config import StreamParams

# Every 0.01 from 0.30 to 0.99: a keyword spotter operates near the top of the range, where matched % and false
# alarms change fastest (one 0.05 step moved the default model from 18 to 8 false alarms/h); a grid that stopped at
# 0.95 found no threshold within budget for confident models (the `real` profile: 25/h at 0.95). 70 thresholds cost
# well under a second per recording: the scores and their averaging are computed once.
THRESHOLDS: tuple[float, ...] = tuple(round(float(t), 2) for t in np.arange(30, 100) / 100)
SWEEP_COLUMNS = ["threshold", "matched_percentage", "correct_percentage", "false_alarms_per_hour"]


def _smoothed(scores: np.ndarray, times_ms: np.ndarray, labels: list[str], settings: StreamParams) -> Smoothed:
    """RecognizeCommands' averaging of one recording (scores [N, len(labels)]), shared by every threshold of a sweep."""
    return smooth(check_width(scores, labels), times_ms, settings.average_window_ms, settings.minimum_count)


def keyword_sweep(scores: np.ndarray, times_ms: np.ndarray, labels: list[str], settings: StreamParams,
                  truth: pd.DataFrame, duration_ms: float, thresholds=THRESHOLDS) -> pd.DataFrame:  # fmt: skip
    """One row per threshold: matched / correct % of the keyword entries of `truth` and false alarms per hour.

    scores [N, C] at END times_ms [N] of a recording `duration_ms` long; `settings` gives everything but the
    threshold (smoothing window, suppression, minimum count, time tolerance)."""
    rows, smoothed = [], _smoothed(scores, times_ms, labels, settings)
    for threshold in thresholds:
        found = commands(smoothed, labels, threshold, settings.suppression_ms, settings.rearm)
        stats = match_detections(found, truth, settings.time_tolerance_ms, duration_ms=duration_ms)
        rows.append({"threshold": float(threshold), **{k: round(float(stats[k]), 4) for k in SWEEP_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def false_accepts_per_hour(parts: list[tuple[np.ndarray, np.ndarray]], labels: list[str], settings: StreamParams,
                           hours: float, thresholds=THRESHOLDS) -> list[float]:  # fmt: skip
    """Detections per hour, per threshold, over recordings that hold no keyword (each (scores [N, C], times [N])
    streamed from a fresh RecognizeCommands); `hours` is their total length. Raises ValueError for hours <= 0."""
    if hours <= 0:
        raise ValueError(f"need a positive length of audio, got {hours} hours")
    smoothed = [_smoothed(s, t, labels, settings) for s, t in parts]
    return [round(sum(len(commands(p, labels, th, settings.suppression_ms, settings.rearm)) for p in smoothed) / hours, 4)
            for th in thresholds]  # fmt: skip


def speech_free_audio(folder: Path, sample_rate: int) -> list[tuple[str, np.ndarray]]:
    """(file name, float32 audio [S]) of every wav in `folder` (sorted, read at `sample_rate`), as recorded: no
    gain change. Raises DataError for an unreadable file."""
    from pipeline.audio import read_audio

    return [(path.name, read_audio(path, sample_rate).audio) for path in sorted(folder.glob("*.wav"))]


def hours_of(samples: int, sample_rate: int) -> float:
    """Length in hours of `samples` at `sample_rate` Hz."""
    return samples * 1000.0 / sample_rate / MS_PER_HOUR


def operating_point(sweep: pd.DataFrame, max_false_alarms_per_hour: float) -> dict | None:
    """The row with the most matched keywords among thresholds at or under the false-alarm budget (ties: the
    higher threshold), or None when no threshold meets it."""
    within = sweep[sweep["false_alarms_per_hour"] <= max_false_alarms_per_hour]
    if within.empty:
        return None
    best = within.sort_values(["matched_percentage", "threshold"], ascending=[False, False]).iloc[0]
    return {k: float(v) for k, v in best.items()}


def validated_point(validation: pd.DataFrame, testing: pd.DataFrame, max_false_alarms_per_hour: float) -> dict | None:
    """The threshold `operating_point` picks on the `validation` sweep and both sweeps' figures at it: threshold,
    validation_matched_percentage, validation_false_alarms_per_hour, and the `testing` sweep's matched_percentage and
    false_alarms_per_hour (the honest operating point: chosen on held-out data, reported on the test); None when no
    validation threshold meets the budget. Both sweeps must hold that threshold."""
    chosen = operating_point(validation, max_false_alarms_per_hour)
    if chosen is None:
        return None
    test = testing[np.isclose(testing["threshold"], chosen["threshold"])].iloc[0]
    return {"threshold": chosen["threshold"], "validation_matched_percentage": chosen["matched_percentage"],
            "validation_false_alarms_per_hour": chosen["false_alarms_per_hour"],
            "matched_percentage": float(test["matched_percentage"]),
            "false_alarms_per_hour": float(test["false_alarms_per_hour"])}  # fmt: skip


GRID_COLUMNS = ["average_window_ms", "threshold", "validation_matched_percentage", "validation_false_alarms_per_hour",
                "matched_percentage", "false_alarms_per_hour"]


def smoothing_grid(validation: tuple, testing: tuple, labels: list[str], settings: StreamParams,
                   windows_ms: list[float], thresholds=THRESHOLDS) -> pd.DataFrame:  # fmt: skip
    """Choose RecognizeCommands' averaging window with its threshold on a validation recording, report on testing.

    `validation`, `testing`: (scores [N, C], times_ms [N], truth, duration_ms) of one streamed recording each.
    One row per window (ms): the threshold, among `thresholds` (default THRESHOLDS, 0.30-0.99 by 0.01), that
    `operating_point` picks on the validation curve within `settings.max_false_alarms_per_hour` (NaN with no
    threshold in budget), that curve's figures, and the testing recording's matched % and false alarms per hour at
    the same threshold. The rest of `settings` (suppression, minimum count, time tolerance) is kept. Raises
    ValueError for an empty `windows_ms` or a window that is not a finite positive number of ms."""
    if not windows_ms:
        raise ValueError("windows_ms must name at least one averaging window")
    bad = [w for w in windows_ms if not (np.isfinite(w) and w > 0)]
    if bad:
        raise ValueError(f"averaging windows must be finite and > 0 ms, got {bad}")
    rows = []
    for window in windows_ms:
        at_window = settings.model_copy(update={"average_window_ms": float(window)})
        curves = [keyword_sweep(s, t, labels, at_window, truth, ms, thresholds) for s, t, truth, ms in (validation, testing)]
        chosen = validated_point(*curves, settings.max_false_alarms_per_hour) or {}
        rows.append(dict.fromkeys(GRID_COLUMNS, float("nan")) | {"average_window_ms": float(window)} | chosen)
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


def best_smoothing(grid: pd.DataFrame) -> dict | None:
    """The `smoothing_grid` row with the most validation keywords matched (ties: the shorter window, less
    latency), or None when no window has a threshold within the budget."""
    chosen = grid.dropna(subset=["threshold"])
    if chosen.empty:
        return None
    best = chosen.sort_values(["validation_matched_percentage", "average_window_ms"], ascending=[False, True]).iloc[0]
    return {k: float(v) for k, v in best.items()}


def plot_sweep(sweep: pd.DataFrame, out_path: Path, title: str, voices: dict[str, pd.DataFrame] | None = None) -> None:
    """Matched % against false alarms per hour (log x), one point per threshold, written atomically as PNG;
    `voices`: further keyword recordings' sweeps (same columns) by name, drawn as their own curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(6, 5))
    x = np.maximum(sweep["false_alarms_per_hour"].to_numpy(float), 0.1)  # 0 FA/h drawn at 0.1 on the log axis
    ax.plot(x, sweep["matched_percentage"], marker="o", label="testing recording")
    for value, y, threshold in zip(x, sweep["matched_percentage"], sweep["threshold"], strict=True):
        if round(threshold * 100) % 5:  # label every 0.05: 70 labels overlap
            continue
        ax.annotate(f"{threshold:.2f}", (value, y), fontsize=7, xytext=(3, -9), textcoords="offset points")
    for column, name in (("speech_free_false_alarms_per_hour", "speech-free audio"),
                         ("non_keyword_false_alarms_per_hour", "non-keyword speech")):  # fmt: skip
        if column in sweep:
            ax.plot(np.maximum(sweep[column].to_numpy(float), 0.1), sweep["matched_percentage"], ls="--", marker=".",
                    label=f"false alarms on {name}")  # fmt: skip
    for name, curve in (voices or {}).items():
        ax.plot(np.maximum(curve["false_alarms_per_hour"].to_numpy(float), 0.1), curve["matched_percentage"], marker="s",
                markersize=3, label=f"{name} recording (same noise)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("false alarms per hour (0 drawn at 0.1)")
    ax.set_ylabel("keywords matched (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below the axes: no curve hidden
    fig.tight_layout()
    with atomic_path(out_path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
