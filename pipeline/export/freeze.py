"""The freeze stage: SavedModel + TFLite float/int8 with the frontend inside, checks, export.json, registry."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.errors import DataError, KwsError
from pipeline.fileio import ensure_space, write_json

log = logging.getLogger(__name__)
MIN_FLOAT_AGREEMENT = 0.999


def load_serving_model(params: Params):
    """The trained classifier behind the shared frontend, as one raw-audio Keras model."""
    import keras

    from pipeline.export.serving import build_serving_model
    from pipeline.features.layers import feature_layer

    path = params.paths.model / "model.keras"
    if not path.exists():
        raise DataError(f"{path}: not found; run the train stage first")
    classifier = keras.saving.load_model(path, compile=False)
    return build_serving_model(feature_layer(params.features), classifier, params.features.clip_samples), classifier


def _clips(params: Params, name: str) -> tuple[np.ndarray, np.ndarray]:
    audio = np.load(params.paths.split / f"{name}_audio.npy", mmap_mode="r")
    labels = np.load(params.paths.split / f"{name}_labels.npy").astype(np.int64)
    return audio, labels


def _representative(params: Params) -> np.ndarray:
    audio, _ = _clips(params, "training")
    rows = np.sort(np.random.default_rng(params.seed).choice(len(audio), min(params.freeze.representative_clips, len(audio)), replace=False))
    return np.asarray(audio[rows], np.float32) / 32768.0


def _score_all(predict, audio: np.ndarray, batch: int = 256) -> np.ndarray:
    scale = 1 / 32768.0 if audio.dtype == np.int16 else 1.0
    return np.concatenate([predict(np.asarray(audio[i : i + batch], np.float32) * scale) for i in range(0, len(audio), batch)])


def _compare(predictors: dict, audio: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of every exported form on one labelled set, and its top-1 agreement with the Keras model."""
    from pipeline.export.tflite import agreement

    scores = {name: _score_all(predict, audio) for name, predict in predictors.items()}
    return {
        "clips": int(len(labels)),
        "accuracy": {name: float((s.argmax(1) == labels).mean()) for name, s in scores.items()},
        "top1_agreement_with_keras": {name: agreement(scores["keras"], s) for name, s in scores.items() if name != "keras"},
    }


def export_models(params: Params) -> dict:
    """Write models/export/* and return the report that becomes export.json."""
    from pipeline.export.serving import export_saved_model, load_saved_model_fn, saved_model_latency_ms
    from pipeline.export.tflite import TfliteModel, convert, latency_ms

    out = params.paths.export
    serving, classifier = load_serving_model(params)
    saved = out / "saved_model"
    export_saved_model(serving, saved, params.labels)
    shutil.copyfile(saved / "labels.txt", out / "labels.txt")
    tflite = {"float": convert(saved, out / "model_float.tflite", "float"),
              "int8": convert(saved, out / "model_int8.tflite", "int8", _representative(params))}  # fmt: skip
    test_audio, test_labels = _clips(params, "testing")
    runners = {mode: TfliteModel(out / f"model_{mode}.tflite", num_threads=1) for mode in tflite}
    predictors = {"keras": lambda x: serving.predict(x, verbose=0)["scores"], "saved_model": load_saved_model_fn(saved),
                  **{mode: runner.predict for mode, runner in runners.items()}}  # fmt: skip
    testing = _compare(predictors, test_audio, test_labels)
    agree = testing["top1_agreement_with_keras"]
    if agree["float"] < MIN_FLOAT_AGREEMENT or agree["saved_model"] < MIN_FLOAT_AGREEMENT:
        raise KwsError(f"exported models disagree with Keras on the testing set: {agree}")
    extra = {}  # the real-speech sets of evaluate.extra_sets: does quantization hold on people, not only on the generator?
    for spec in params.evaluate.extra_sets:
        if spec.path.is_dir():
            from pipeline.evaluate.sets import load_folder_set

            folder = load_folder_set(spec.path, params.labels, params.features.sample_rate, params.features.clip_samples)
            extra[spec.name] = _compare(predictors, folder.audio, np.asarray(folder.labels, np.int64))
    clip = np.asarray(test_audio[0], np.float32) / 32768.0
    repeats = params.freeze.latency_repeats
    latency = {
        "keras": latency_ms(lambda x: serving(x, training=False), clip, repeats=repeats),
        "saved_model": saved_model_latency_ms(saved, clip, threads=1, repeats=repeats),
        **{f"tflite_{mode}": latency_ms(runner.predict, clip, repeats=repeats) for mode, runner in runners.items()},
    }
    files = {p.name: p.stat().st_size for p in sorted(out.glob("*.tflite"))}
    files["saved_model"] = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    report = {
        "labels": params.labels,
        "parameters": int(classifier.count_params()),
        "clip_samples": params.features.clip_samples,
        "sample_rate": params.features.sample_rate,
        "saved_model": {"signature": "serving_default", "input": {"name": "audio", "dtype": "float32",
                        "shape": [None, params.features.clip_samples]}, "output": {"name": "scores", "dtype": "float32",
                        "shape": [None, len(params.labels)]}},  # fmt: skip
        "tflite": tflite,
        "bytes": files,
        "testing": testing,
        **extra,
        "latency_ms_1_thread": latency,
    }
    return report


def _example_wav(params: Params) -> bytes:
    import soundfile as sf

    audio, _ = _clips(params, "testing")
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(audio[0]), params.features.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def register_model(params: Params, report: dict) -> dict:
    """Log the pyfunc model to the training run, register it and point `challenger` at the new version."""
    from pipeline.tracking import Run
    from pipeline.tracking.pyfunc import log_pyfunc
    from pipeline.tracking.registry import register, reuse_version, version_of_run

    run_id = (params.paths.model / "run_id.txt").read_text().strip()
    evaluation = json.loads((params.paths.reports / "evaluation.json").read_text())
    out = params.paths.export
    name = params.freeze.registered_model_name
    existing = version_of_run(name, run_id)  # a rerun after a kill that followed the registration: one version per run
    if existing is not None:
        log.info("%s version %d is already registered from run %s: reused", name, existing[0], run_id)
        model_uri = existing[1]
    else:
        model_uri = log_pyfunc(run_id, out / "saved_model", out / "labels.txt", _example_wav(params), params.features.sample_rate)
    tags = {"test_accuracy": evaluation["testing"]["accuracy"], "model": params.train.model.name,
            "int8_test_accuracy": report["testing"]["accuracy"]["int8"]}  # fmt: skip
    for set_name, values in evaluation.items():
        if set_name not in {"testing", "streaming"} and "accuracy" in values:
            tags[f"{set_name}_accuracy"] = values["accuracy"]
    version = reuse_version(name, existing[0], tags) if existing is not None else register(name, model_uri, run_id, tags)
    run = Run.resume(run_id)
    run.metrics({"int8_test_accuracy": report["testing"]["accuracy"]["int8"],
                 "tflite_int8_bytes": report["bytes"]["model_int8.tflite"]})  # fmt: skip
    run.artifact(out / "export.json", "export")
    return {"name": name, "version": version, "alias": "challenger", "model_uri": model_uri, "run_id": run_id}


def scored_sets(report: dict) -> list[str]:
    """The labelled sets the exports were compared on: testing, then the extra (real-speech) sets."""
    return [name for name, value in report.items() if isinstance(value, dict) and "top1_agreement_with_keras" in value]


def summary_metrics(report: dict) -> dict:
    """The few export figures `dvc metrics show` should print (export.json keeps every detail)."""
    testing = report["testing"]
    return {
        "bytes": report["bytes"],
        "parameters": report["parameters"],
        "test_accuracy": testing["accuracy"],
        "agreement_with_keras": testing["top1_agreement_with_keras"],
        **{f"{name}_accuracy": report[name]["accuracy"] for name in scored_sets(report) if name != "testing"},
        "latency_median_ms": {name: round(v["median_ms"], 3) for name, v in report["latency_ms_1_thread"].items()},
    }


def export_space_needed(params: Params) -> int:
    """Bytes the exports need, estimated from the trained model: SavedModel, two TFLite files and the MLflow copy of
    the SavedModel, each at most a few times the Keras file (the frontend's weights, e.g. the speech embedding's
    ~1 MB, come on top), with a 50 MB floor for TensorFlow's temporary conversion files."""
    keras_file = params.paths.model / "model.keras"
    size = keras_file.stat().st_size if keras_file.exists() else 0
    frontend = 20_000_000 if params.features.preprocess == "speech_embedding" else 0
    return max(50_000_000, 8 * size + 4 * frontend)


def run_freeze(params: Params) -> dict:
    """Export, check, write export.json, then register the model version."""
    from pipeline.export.tflite import int8_gate
    from pipeline.tracking import check_tracking, tracking_uri

    for needed, stage in ((params.paths.model / "run_id.txt", "train"), (params.paths.reports / "evaluation.json", "evaluate")):
        if not needed.is_file():  # checked before the minutes of export, not after
            raise DataError(f"{needed}: not found; run the {stage} stage first")
    check_tracking(tracking_uri())  # the registry is needed at the end: an unreachable server fails now, in seconds
    ensure_space(params.paths.export, export_space_needed(params), "the exports")
    (params.paths.export / "registered.json").unlink(missing_ok=True)  # never leave an earlier run's record behind
    report = export_models(params)
    write_json(params.paths.export / "export.json", report)
    write_json(params.paths.export / "metrics.json", summary_metrics(report))
    for name in scored_sets(report):  # int8 may lose at most max_int8_drop points on every set, real speech included
        accuracy = report[name]["accuracy"]
        int8_gate(accuracy["float"], accuracy["int8"], params.freeze.max_int8_drop, name)
    registered = register_model(params, report)
    write_json(params.paths.export / "registered.json", registered)
    return {**report, "registered": registered}
