#!/usr/bin/env python
"""Choose RecognizeCommands' averaging window with the detection threshold on the validation recording, and
report the testing recording's figures at that choice (not a test).

Usage:
    uv run python bench/smoothing.py                          # the workspace's trained model, params.yaml
    uv run python bench/smoothing.py --windows 250,500,750,1000 --json-out bench/results/smoothing.json

Streams the evaluate stage's two seeded keyword recordings (`evaluate.streaming`, made from the split's
validation and testing clips) once each through the trained model (`paths.model`), then, per window, runs the
threshold sweep on both (pipeline.stream.sweep.smoothing_grid). The candidate for `evaluate.streaming` is the best
validation row; on an hour-long recording one keyword is ~0.08 pt, but windows within about a point of each other
are within one run's noise (400-600 ms on the default model), so prefer the one you already use among those. The
testing figures are what to expect on unseen clips.
Needs `dvc repro train` (or `make run`) first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import artifacts  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.errors import KwsError  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--windows", default="250,400,500,600,750,1000",
                        help="averaging windows to compare, ms, comma-separated")  # fmt: skip
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench/results/smoothing.json")
    args = parser.parse_args(argv)
    try:
        windows = [float(w) for w in args.windows.split(",") if w.strip()]
    except ValueError:
        windows = []
    if not windows or not all(math.isfinite(w) and w > 0 for w in windows):
        parser.error(f"--windows: expected positive numbers in ms separated by commas, got {args.windows!r}")
    try:
        return _run(load_params(args.params), windows, args.json_out)
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(params, windows: list[float], out: Path) -> int:
    from pipeline.evaluate.run import set_recording
    from pipeline.inference import load_keras
    from pipeline.stream.sweep import best_smoothing, smoothing_grid

    settings, rate = params.evaluate.streaming, params.features.sample_rate
    started = time.perf_counter()
    scorer = load_keras(artifacts.MODEL.require(params.paths), params.features, params.evaluate.batch_size)
    recordings = []
    for name in ("validation", "testing"):
        audio, truth, _ = set_recording(params, name)
        scores, times_ms = scorer.stream_scores(audio, settings)
        recordings.append((scores, times_ms, truth, len(audio) * 1000 / rate))
    grid = smoothing_grid(*recordings, params.labels, settings, windows)
    best = best_smoothing(grid)
    print(grid.to_string(index=False))
    print("best on validation:", best)
    write_json(out, {
        "what": "RecognizeCommands averaging window and threshold chosen on the validation recording (most keywords "
                "within max_false_alarms_per_hour), with the testing recording's figures at the same choice",
        "model": str(artifacts.MODEL.path(params.paths)),
        "settings": {k: v for k, v in settings.model_dump(mode="json").items() if k != "average_window_ms"},
        "windows_ms": windows,
        "grid": grid.astype(object).where(grid.notna(), None).to_dict(orient="records"),
        "best": best,
        "seconds": round(time.perf_counter() - started, 1),
    })  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
