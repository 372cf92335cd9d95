"""Benchmark: how corpus generation and embedding features scale with Ray workers, and what Ray itself costs.

Measures, on this machine (not a test):
* engine: local Ray start-up (ray.init to the first task's result), then the Ray Data pipeline
  (`pipeline.compute.map_tasks`) over 10 and 60 no-op tasks: its own start (actor pool) and per-task overhead;
* generation: clips/s of a small corpus (espeak speakers, a few Kokoro blends, the noises) with 1 worker (in
  this process) and 2 local Ray workers, and whether the bytes are identical;
* features: clips/s (clip x view) of the embedding features of a tone corpus split, 1 vs 2 workers, and the
  largest difference between the two.
Writes bench/results/scale.json. Usage: python bench/scale.py [--speakers 12] [--blends 2] [--clips 1600]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # before `import ray`: no copy of this folder per worker
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine_facts  # noqa: E402
from pipeline.compute import map_tasks, ray_session  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


class EngineLog(logging.Handler):
    """Remembers whether the last pipeline ran on Ray or fell back to this process (Ray's 30 s start limit)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def engine(self) -> str:
        used = "ray" if any(m.startswith("ray: ") for m in self.messages) else "in-process"
        used = "in-process (local Ray did not start in time)" if any("instead" in m for m in self.messages) else used
        self.messages.clear()
        return used


ENGINE_LOG = EngineLog()


class NoOp:
    """A worker that does nothing: what is left is the engine's own cost."""

    def __call__(self, item: int) -> int:
        return item


def engine_costs(small: int, large: int) -> dict:
    """Local Ray start-up (s); a first no-op pipeline (Ray Data's one-time set-up in a new instance), then
    pipelines of `small` and `large` no-op tasks on 2 workers: their difference gives the per-task overhead
    (ms), the rest is a pipeline's own start (its actor pool)."""
    import ray
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start = time.perf_counter()
    with ray_session(2):
        ray.get(ray.remote(lambda: 1).remote())
        startup = time.perf_counter() - start
        seconds = []
        for tasks in (small, small, large):  # the first is the cold one
            begin = time.perf_counter()
            assert sorted(i for i, _ in map_tasks(NoOp, (), list(range(tasks)), workers=2)) == list(range(tasks))
            seconds.append(time.perf_counter() - begin)
    cold, small_s, large_s = seconds
    per_task = (large_s - small_s) / (large - small)  # may come out negative where start-up noise dominates
    return {"ray_start_s": round(startup, 2), "first_pipeline_s": round(cold, 2),
            "pipeline_s": {str(small): round(small_s, 2), str(large): round(large_s, 2)},
            "per_task_overhead_ms": round(1000 * per_task, 1),
            "pipeline_start_s": round(small_s - small * per_task, 2)}  # fmt: skip


def _hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.wav")):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def generation(speakers: int, blends: int, workers: int, out: Path) -> dict:
    """Seconds and clips/s of a corpus of `speakers` espeak voices and `blends` Kokoro blends (WORDS, 1 rep)."""
    from pipeline.config import SyntheticSource
    from pipeline.data.generate import generate_corpus
    from pipeline.data.neural import neural_voices

    source = SyntheticSource(kind="synthetic", speakers=speakers, repetitions=1, noise_seconds=5)
    start = time.perf_counter()
    summary = generate_corpus(source, WORDS, 1, out, workers=workers, progress=False,
                              voices=neural_voices(blends, 1)[1:])  # fmt: skip
    seconds = time.perf_counter() - start
    clips = summary["clips"] + summary.get("neural", {}).get("clips", 0)  # espeak, then the neural voices' own
    return {"workers": workers, "engine": ENGINE_LOG.engine(), "clips": clips, "seconds": round(seconds, 2),
            "clips_per_s": round(clips / seconds, 1), "sha256": _hash(out)}  # fmt: skip


def features(clips: int, workers: int, root: Path) -> tuple[dict, np.ndarray]:
    """Seconds and clip-views/s of the speech-embedding training views (3 views) of a tone-corpus split."""
    from pipeline.data.sources import fetch_sources
    from pipeline.data.split import run_split
    from pipeline.features.extract import training_views
    from tests.conftest import TINY_SPLIT, TINY_WORDS, make_params, write_tone_corpus

    feats = {"preprocess": "speech_embedding", "embedding": {"views": 3}}
    params = make_params(root, data=TINY_WORDS, split=TINY_SPLIT, features=feats)
    if not (root / "split").exists():
        write_tone_corpus(root / "corpus", ["yes", "no", "cat", "dog"], speakers=max(1, clips // 8), reps=2,
                          noise_seconds=30)  # fmt: skip
        fetch_sources(params, progress=False)
        run_split(params, progress=False)
    start = time.perf_counter()
    views = training_views(params, workers=workers)
    seconds = time.perf_counter() - start
    count = views.shape[0] * views.shape[1]
    return {"workers": workers, "engine": ENGINE_LOG.engine(), "clip_views": count, "seconds": round(seconds, 2),
            "clips_per_s": round(count / seconds, 1)}, views  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=12)
    parser.add_argument("--blends", type=int, default=2)
    parser.add_argument("--clips", type=int, default=1600, help="tone clips in the features corpus (3+ chunks)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    args = parser.parse_args()
    logging.getLogger("pipeline.compute").addHandler(ENGINE_LOG)
    logging.getLogger("pipeline.compute").setLevel(logging.INFO)
    report = {"machine": machine_facts(), "engine": engine_costs(10, 60)}
    ENGINE_LOG.messages.clear()
    print("engine", report["engine"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [generation(args.speakers, args.blends, w, Path(tmp) / f"gen{w}") for w in (1, 2)]
        report["generation"] = {"runs": runs, "identical": runs[0]["sha256"] == runs[1]["sha256"],
                                "speedup_2_vs_1": round(runs[0]["seconds"] / runs[1]["seconds"], 2)}  # fmt: skip
        print("generation", report["generation"], flush=True)
        one, views_one = features(args.clips, 1, Path(tmp) / "feat")
        two, views_two = features(args.clips, 2, Path(tmp) / "feat")
        report["features"] = {"runs": [one, two], "max_abs_difference": float(np.abs(views_one - views_two).max()),
                              "speedup_2_vs_1": round(one["seconds"] / two["seconds"], 2)}  # fmt: skip
        print("features", report["features"], flush=True)
    report["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
