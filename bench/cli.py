#!/usr/bin/env python
"""Benchmark: cold `kws label-wav CLIP --model MODEL` wall time, each run a fresh process (not a test).

Usage:
    uv run python bench/cli.py                                   # models/export/model_float.tflite, 7 runs
    uv run python bench/cli.py --model models/export --runs 5    # the SavedModel (TensorFlow) for comparison
    uv run python bench/cli.py --build-demo /tmp/demo_export     # no trained export at hand: see below
    uv run python bench/cli.py --code /tmp/old_checkout ...      # time another checkout's `pipeline` (before/after)

Each run starts `python -m pipeline.cli label-wav CLIP --json --model MODEL` from nothing (imports, model load,
one clip scored) and is timed from outside; the median of `--runs` is reported with every run, the machine's
load average and whether the run imported TensorFlow. `--compare` (default: the SavedModel beside a .tflite)
checks that the same top label comes out. `--build-demo DIR` writes an export of the default architecture
(speech-embedding frontend + the embedding head, untrained: same graph and size as the shipped model, random
labels) to DIR, for machines without a trained export; its timings are those of the shipped model's graph.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_facts  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402

PROBE = """
import runpy, sys
sys.argv = ["kws", *sys.argv[1:]]
try:
    runpy.run_module("pipeline.cli", run_name="__main__")
except SystemExit as done:
    heavy = "tensorflow" in sys.modules
    print(f"TENSORFLOW_IMPORTED={heavy}", file=sys.stderr)
    raise
"""


def build_demo(folder: Path) -> Path:
    """An untrained export of the default architecture (see the module docstring); returns the float .tflite."""
    import numpy as np

    from pipeline.config import FeaturesParams
    from pipeline.export.serving import build_serving_model, export_saved_model
    from pipeline.export.tflite import convert
    from pipeline.features.layers import feature_layer
    from pipeline.models import build_model

    features = FeaturesParams(preprocess="speech_embedding")
    labels = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    head = build_model({"name": "embedding_head"}, features.feature_shape, len(labels))
    serving = build_serving_model(feature_layer(features), head, features.clip_samples)
    export_saved_model(serving, folder / "saved_model", labels, features.sample_rate, features.preprocess)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    convert(folder / "saved_model", folder / "model_float.tflite", "float")
    import soundfile as sf

    t = np.arange(16000) / 16000
    sf.write(folder / "clip.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, subtype="PCM_16")
    return folder / "model_float.tflite"


def run_once(code: Path, clip: Path, model: Path) -> tuple[float, float, dict, bool]:
    """Wall and CPU (user + system) seconds of one cold CLI call, its JSON answer, whether it imported TensorFlow.
    CPU time hardly depends on what else the machine runs; wall time does."""
    env = {**os.environ, "PYTHONPATH": str(code), "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, "label-wav", str(clip), "--json", "--model", str(model)],
                          capture_output=True, text=True, env=env, cwd=code)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"error: kws label-wav failed ({done.returncode}): {done.stderr.strip().splitlines()[-3:]}")
    return wall, cpu, json.loads(done.stdout)[0], "TENSORFLOW_IMPORTED=True" in done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/export/model_float.tflite"))
    parser.add_argument("--compare", type=Path, default=None, help="model whose top label must match (default: the "
                        "export folder beside a .tflite)")  # fmt: skip
    parser.add_argument("--clip", type=Path, default=None, help="wav to label (default: clip.wav beside the model)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose `pipeline` package runs (default: this one)")
    parser.add_argument("--build-demo", type=Path, default=None, help="write an untrained default-architecture export here first")
    parser.add_argument("--out", type=Path, default=Path("bench/results/cli.json"))
    args = parser.parse_args(argv)
    if args.build_demo is not None:
        args.model = build_demo(args.build_demo.resolve())
    model = args.model.resolve()
    clip = (args.clip or model.parent / "clip.wav").resolve()
    if not model.exists() or not clip.is_file():
        print(f"error: {model} or {clip} not found (run the freeze stage, pass --model/--clip, or --build-demo DIR)", file=sys.stderr)
        return 1
    compare = args.compare or (model.parent if model.suffix == ".tflite" else None)
    walls, cpus, answers, heavy = [], [], [], []
    for _ in range(args.runs):
        wall, cpu, answer, tf_imported = run_once(args.code.resolve(), clip, model)
        walls.append(round(wall, 3))
        cpus.append(round(cpu, 3))
        answers.append(answer["top"][0]["label"])
        heavy.append(tf_imported)
        print(f"{model.name}: {wall:.2f} s wall, {cpu:.2f} s CPU ({answer['top'][0]['label']}), tensorflow imported: "
              f"{tf_imported}", flush=True)  # fmt: skip
    result = {
        **machine_facts(),
        "code": str(args.code.resolve()),
        "model": str(model),
        "clip": str(clip),
        "runs_s": walls,
        "median_s": statistics.median(walls),
        "cpu_s": cpus,
        "median_cpu_s": statistics.median(cpus),
        "labels": sorted(set(answers)),
        "tensorflow_imported": any(heavy),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    if compare is not None and compare.resolve() != model:
        _, _, other, _ = run_once(args.code.resolve(), clip, compare.resolve())
        result["compared_with"] = {"model": str(compare), "label": other["top"][0]["label"],
                                   "same_label": other["top"][0]["label"] == answers[0]}  # fmt: skip
    write_json(args.out, result)
    print(f"median {result['median_s']:.2f} s wall, {result['median_cpu_s']:.2f} s CPU over {args.runs} cold runs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
