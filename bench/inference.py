#!/usr/bin/env python
"""Benchmark: single-clip latency, file sizes and streaming speed of the exported models (not a test).

Usage:
    uv run python bench/inference.py                          # --export models/export, Keras from models/train
    uv run python bench/inference.py --export models/export --model models/train/model.keras --repeats 200
    uv run python bench/inference.py --export /tmp/export --no-keras --stream-seconds 30

Needs the freeze stage's export folder (saved_model/, model_float.tflite, model_int8.tflite, labels.txt), the
split stage's testing clips (the latency clip and the streaming recording) and, for the Keras rows, the train
stage's model.keras (`--model`, default paths.model/model.keras; `--no-keras` skips those rows).

Latency: median and p90 ms of scoring one 1 s clip, on `--threads` threads (default 1) after a warm-up, for
  keras             the trained classifier behind the feature layer (pipeline.inference.load_keras),
                    called eagerly as the freeze stage measures it, and as a tf.function (`keras_tf_function`)
  saved_model       serving_default in a fresh process with `--threads` TF threads (saved_model_latency_ms)
  tflite_float/int8 the LiteRT interpreter with num_threads=`--threads` (pipeline.export.tflite.TfliteModel)
Streaming: a `--stream-seconds` (default 60) recording generated from the testing clips
(pipeline.stream.recording.make_recording) scored by Predictor.stream_scores + RecognizeCommands (windows every
clip_stride_ms, or the shared embedding sequence: *_sequence rows) with TFLite float, TFLite int8, the Keras
classifier and the SavedModel (pipeline.inference); speed is audio seconds per
wall second (x real time), after one warm-up batch. TensorFlow runs on `--threads` threads for all of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine_facts  # noqa: E402
from pipeline.config import Params, load_params, parse_params  # noqa: E402
from pipeline.errors import DataError, KwsError  # noqa: E402
from pipeline.fileio import write_json  # noqa: E402

TFLITE_FILES = {"tflite_float": "model_float.tflite", "tflite_int8": "model_int8.tflite"}


def _with_model(params: Params, model_file: Path) -> Params:
    """params with paths.model pointing at the folder of `model_file` (load_serving_model reads model.keras there)."""
    if model_file.name != "model.keras":
        raise DataError(f"{model_file}: expected a file named model.keras (as the train stage writes)")
    raw = params.model_dump(mode="json")
    raw["paths"]["model"] = str(model_file.parent)
    return parse_params(raw)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _round(result: dict) -> dict:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def stream_speed(predictor, mode: str, audio: np.ndarray, truth, params: Params) -> dict:
    """Wall time of scoring + RecognizeCommands over the whole recording in `mode` (windows / sequence), after a
    warm-up, and its accuracy."""
    from pipeline.stream.accuracy import match_detections
    from pipeline.stream.run import recognize

    feat = params.features
    settings = params.evaluate.streaming.model_copy(update={"mode": mode})
    predictor.scores(np.stack([audio[: predictor.clip_samples]] * 8))  # warm-up: tracing, allocation
    predictor.stream_scores(audio[: 3 * feat.sample_rate], settings)
    start = time.perf_counter()
    scores, times = predictor.stream_scores(audio, settings)
    detections = recognize(scores, times, predictor.labels, settings)
    wall = time.perf_counter() - start
    seconds = len(audio) / feat.sample_rate
    stats = match_detections(detections, truth, settings.time_tolerance_ms, duration_ms=seconds * 1000)
    return {
        "audio_seconds": round(seconds, 3),
        "wall_seconds": round(wall, 3),
        "x_real_time": round(seconds / wall, 2),
        "windows": len(times),
        "windows_per_second": round(len(times) / wall, 1),
        "detections": len(detections),
        "correct_percentage": round(float(stats["correct_percentage"]), 2),
        "false_positives": int(stats["false_positives"]),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, default=None, help="export folder (default: paths.export of params.yaml)")
    parser.add_argument("--model", type=Path, default=None, help="trained model.keras (default: paths.model/model.keras)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras rows (no model.keras at hand)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="TF and TFLite threads (default 1)")
    parser.add_argument("--repeats", type=int, default=100, help="timed single-clip runs per model (default 100)")
    parser.add_argument("--stream-seconds", type=float, default=60.0, help="length of the streamed recording (default 60)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/inference.json"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.stream_seconds <= 1:
        parser.error("--threads and --repeats must be positive, --stream-seconds above 1")

    from pipeline.export.tflite import set_tf_threads

    threads_applied = set_tf_threads(args.threads)  # before TF starts: its pools are sized once
    try:
        params = load_params(args.params)
        if args.model is not None:
            params = _with_model(params, args.model)
        export = args.export or params.paths.export
        saved = export / "saved_model"
        needed = [saved / "saved_model.pb", *(export / f for f in TFLITE_FILES.values())]
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise DataError(f"missing {', '.join(missing)}: run the freeze stage first (or pass --export)")
        split = params.paths.split
        clip_files = [split / f"{n}.npy" for n in ("testing_audio", "testing_labels", "background_testing")]
        missing = [str(p) for p in clip_files if not p.exists()]
        if missing:
            raise DataError(f"missing {', '.join(missing)}: run the split stage first")
        keras_file = params.paths.model / "model.keras"
        if not args.no_keras and not keras_file.exists():
            raise DataError(f"{keras_file}: not found; run the train stage, pass --model, or use --no-keras")
    except KwsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    import tensorflow as tf

    from pipeline.export.serving import read_labels, saved_model_latency_ms
    from pipeline.export.tflite import latency_ms
    from pipeline.inference import load_keras, load_saved_model, load_tflite
    from pipeline.stream.recording import make_recording

    labels = read_labels(saved)
    if labels != params.labels:
        print(f"warning: {saved}/labels.txt differs from params.yaml's labels; using the export's", file=sys.stderr)
    feat = params.features
    test_audio = np.load(clip_files[0], mmap_mode="r")
    test_labels = np.load(clip_files[1]).astype(np.int64)
    clip = np.asarray(test_audio[0], np.float32) / 32768.0  # the clip the freeze stage times
    results: dict = {
        **machine_facts(),
        "threads": args.threads,
        "tf_threads_applied": threads_applied,
        "export": str(export),
        "preprocess": feat.preprocess,
        "labels": labels,
        "latency_ms": {},
        "bytes": {},
        "streaming": {},
    }
    runners = {name: load_tflite(export / file, threads=args.threads) for name, file in TFLITE_FILES.items()}
    latency = results["latency_ms"]
    serving, keras_predictor = None, None
    if not args.no_keras:
        keras_predictor = load_keras(keras_file, feat, params.evaluate.batch_size)
        serving = keras_predictor.model
        results["parameters"] = keras_predictor.info["parameters"]
        keras_scores = keras_predictor.scores(clip)
        gap = float(np.abs(keras_scores - runners["tflite_float"].scores(clip)).max())
        results["keras_vs_tflite_float_max_abs_diff"] = round(gap, 6)
        if gap > 1e-3:  # e.g. params.yaml's features or paths.model are not the ones this export was made from
            print(f"warning: the Keras model scores the test clip {gap:.3f} away from {export}/model_float.tflite: "
                  "is it the model (and params.yaml) this export was made from?", file=sys.stderr)  # fmt: skip
        latency["keras"] = latency_ms(lambda x: serving(x, training=False), clip, repeats=args.repeats)
        compiled = tf.function(lambda x: serving(x, training=False)["scores"], reduce_retracing=True)
        latency["keras_tf_function"] = latency_ms(compiled, clip, repeats=args.repeats)
    latency["saved_model"] = saved_model_latency_ms(saved, clip, threads=args.threads, repeats=args.repeats)
    for name, runner in runners.items():
        latency[name] = latency_ms(runner.predict_fn, clip, repeats=args.repeats)
    latency.update({k: _round(v) for k, v in latency.items()})

    sizes = results["bytes"]
    sizes["saved_model"] = _dir_bytes(saved)
    for name, file in TFLITE_FILES.items():
        sizes[name] = (export / file).stat().st_size
    if not args.no_keras:
        sizes["keras"] = keras_file.stat().st_size

    print(f"{export}: {feat.preprocess}, {args.threads} thread(s), {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    print(f"{'model':18s} {'median ms':>10s} {'p90 ms':>8s} {'bytes':>10s}")
    for name, row in latency.items():
        size = sizes.get(name.removesuffix("_tf_function"))
        print(f"{name:18s} {row['median_ms']:10.2f} {row['p90_ms']:8.2f} {size if size is not None else '-':>10}")

    settings = params.evaluate.streaming.model_copy(update={"recording_seconds": args.stream_seconds})
    noise = np.load(clip_files[2])
    audio, truth = make_recording(np.asarray(test_audio), test_labels, labels, noise, settings, feat.sample_rate, params.seed)
    stream_params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"streaming": settings})})
    scorers = {name: (runner, "windows") for name, runner in runners.items()}
    if keras_predictor is not None:
        scorers["keras_scorer"] = (keras_predictor, "windows")
        if "sequence" in keras_predictor.capabilities:
            scorers["keras_sequence"] = (keras_predictor, "sequence")
    saved_predictor = load_saved_model(saved)
    if "sequence" in saved_predictor.capabilities:
        scorers["saved_model_sequence"] = (saved_predictor, "sequence")
    print(f"\nstreaming {args.stream_seconds:g} s: windows every {settings.clip_stride_ms:g} ms; *_sequence every 80 ms")
    print(f"{'scorer':20s} {'x real time':>11s} {'results/s':>10s} {'wall s':>8s} {'detections':>10s} {'correct %':>10s}")
    for name, (predictor, mode) in scorers.items():
        row = stream_speed(predictor, mode, audio, truth, stream_params)
        results["streaming"][name] = row
        print(f"{name:20s} {row['x_real_time']:11.2f} {row['windows_per_second']:10.1f} {row['wall_seconds']:8.2f} "
              f"{row['detections']:10d} {row['correct_percentage']:10.1f}", flush=True)  # fmt: skip
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)  # other processes skew every timing
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
