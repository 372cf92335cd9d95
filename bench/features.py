"""Benchmark: clips/s of the audio frontend per preprocess mode on random 1 s clips (not a test)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.config import FeaturesParams  # noqa: E402
from pipeline.features.frontend import MODES, frontend_from_params  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402


def measure(mode: str, clips: int, batch: int, jit: bool, repeats: int = 3) -> dict:
    """Best-of-`repeats` clips/s of one mode, after a warm-up call that also compiles."""
    p = FeaturesParams(preprocess=mode)
    layer = frontend_from_params(p)
    fn = tf.function(layer.call, jit_compile=jit, input_signature=[tf.TensorSpec([batch, p.clip_samples], tf.float32)])
    rng = np.random.default_rng(0)
    data = tf.constant(rng.uniform(-1.0, 1.0, (batch, p.clip_samples)).astype(np.float32))
    fn(data).numpy()  # warm-up / compile
    batches = max(1, clips // batch)
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            fn(data).numpy()
        best = max(best, batches * batch / (time.perf_counter() - start))
        best_cpu = max(best_cpu, batches * batch / (time.process_time() - start_cpu))
    return {
        "clips_per_second": round(best, 1),
        "clips_per_cpu_second": round(best_cpu, 1),  # less sensitive to other processes on the machine
        "batch": batch,
        "frames": p.frames,
        "bins": p.feature_bin_count,
        "jit_compile": jit,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure every mode, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=5000, help="clips per timed run")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the best is reported")
    parser.add_argument("--no-jit", action="store_true", help="plain tf.function instead of XLA")
    parser.add_argument("--out", type=Path, default=Path("bench/results/features.json"))
    args = parser.parse_args(argv)
    results: dict = {"load_average_1m_before": round(os.getloadavg()[0], 2)}
    print(f"{'mode':12s} {'clips/s':>10s} {'clips/cpu-s':>12s} {'batch':>6s} {'frames':>6s} {'bins':>5s}")
    for mode in MODES:
        row = measure(mode, args.clips, args.batch, not args.no_jit, args.repeats)
        results[mode] = row
        print(
            f"{mode:12s} {row['clips_per_second']:10.0f} {row['clips_per_cpu_second']:12.0f} "
            f"{row['batch']:6d} {row['frames']:6d} {row['bins']:5d}"
        )
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other processes skew clips/s
    results["cpu_count"] = os.cpu_count()
    results["tensorflow"] = tf.__version__
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
