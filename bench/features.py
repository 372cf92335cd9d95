"""Benchmark: clips/s of the audio frontend per preprocess mode on random 1 s clips, and of the speech
embedding (mel + frozen CNN, each 1 s clip padded to features.embedding.pad_to_ms) as the features stage runs
it (not a test)."""

from __future__ import annotations

import argparse
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


def measure_embedding(clips: int, batch: int, pad_to_ms: int, repeats: int = 2) -> dict:
    """Best-of-`repeats` clips/s of compute_embeddings (the features stage's path), after a warm-up."""
    from pipeline.features.embedding import compute_embeddings

    p = FeaturesParams(preprocess="speech_embedding")
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (clips, p.clip_samples)).astype(np.float32)
    pad = p.sample_rate * pad_to_ms // 1000
    out = compute_embeddings(data[:batch], pad_to_samples=pad, batch_size=batch)
    best, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        compute_embeddings(data, pad_to_samples=pad, batch_size=batch)
        best = max(best, clips / (time.perf_counter() - start))
        best_cpu = max(best_cpu, clips / (time.process_time() - start_cpu))
    return {"clips_per_second": round(best, 1), "clips_per_cpu_second": round(best_cpu, 1), "batch": batch,
            "frames": int(out.shape[1]), "bins": int(out.shape[2]), "pad_to_ms": pad_to_ms, "jit_compile": False}  # fmt: skip


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
    for pad_to_ms in (2000, 1000):  # the default layout (16 x 96) and no padding (3 x 96)
        row = measure_embedding(max(args.batch, args.clips // 5), min(args.batch, 256), pad_to_ms)
        name = f"speech_embedding_{pad_to_ms}ms"
        results[name] = row
        print(f"{name:12s} {row['clips_per_second']:10.0f} {row['clips_per_cpu_second']:12.0f} "
              f"{row['batch']:6d} {row['frames']:6d} {row['bins']:5d}")  # fmt: skip
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other processes skew clips/s
    results["cpu_count"] = os.cpu_count()
    results["tensorflow"] = tf.__version__
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
