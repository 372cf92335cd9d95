"""The freeze stage: SavedModel + TFLite float/int8 with the frontend inside, checks, export.json, registry."""

from __future__ import annotations

import io
import json
import logging
import shutil

import numpy as np

from pipeline.config import Params
from pipeline.errors import DataError, KwsError
from pipeline.fileio import write_json

log = logging.getLogger(__name__)
MIN_FLOAT_AGREEMENT = 0.999


def _clips(params: Params, name: str) -> tuple[np.ndarray, np.ndarray]:
    audio = np.load(params.paths.split / f"{name}_audio.npy", mmap_mode="r")
    labels = np.load(params.paths.split / f"{name}_labels.npy").astype(np.int64)
    return audio, labels


def _representative(params: Params) -> np.ndarray:
    audio, _ = _clips(params, "training")
    rows = np.sort(np.random.default_rng(params.seed).choice(len(audio), min(params.freeze.representative_clips, len(audio)), replace=False))
    return np.asarray(audio[rows], np.float32) / 32768.0


def _compare(predictors: dict, audio: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy of every exported form (pipeline.inference.Predictor) on one labelled set, and its top-1
    agreement with the Keras model."""
    from pipeline.export.tflite import agreement

    scores = {name: predictor.scores(audio) for name, predictor in predictors.items()}
    return {
        "clips": int(len(labels)),
        "accuracy": {name: float((s.argmax(1) == labels).mean()) for name, s in scores.items()},
        "top1_agreement_with_keras": {name: agreement(scores["keras"], s) for name, s in scores.items() if name != "keras"},
    }


def export_models(params: Params) -> dict:
    """Write models/export/* and return the report that becomes export.json."""
    from pipeline.export.serving import export_saved_model, saved_model_latency_ms
    from pipeline.export.tflite import convert, latency_ms
    from pipeline.inference import load_keras, load_saved_model, load_tflite

    out, feat = params.paths.export, params.features
    keras_predictor = load_keras(params.paths.model / "model.keras", feat, params.evaluate.batch_size)
    serving = keras_predictor.model
    saved = out / "saved_model"
    export_saved_model(serving, saved, keras_predictor.labels, feat.sample_rate, feat.preprocess)
    shutil.copyfile(saved / "labels.txt", out / "labels.txt")
    tflite = {"float": convert(saved, out / "model_float.tflite", "float"),
              "int8": convert(saved, out / "model_int8.tflite", "int8", _representative(params))}  # fmt: skip
    test_audio, test_labels = _clips(params, "testing")
    predictors = {"keras": keras_predictor, "saved_model": load_saved_model(saved),
                  **{mode: load_tflite(out / f"model_{mode}.tflite") for mode in tflite}}  # fmt: skip
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
        **{f"tflite_{mode}": latency_ms(predictors[mode].predict_fn, clip, repeats=repeats) for mode in tflite},
    }
    files = {p.name: p.stat().st_size for p in sorted(out.glob("*.tflite"))}
    files["saved_model"] = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file())
    report = {
        "labels": params.labels,
        "parameters": keras_predictor.info["parameters"],
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
    from pipeline.tracking.registry import register

    run_id = (params.paths.model / "run_id.txt").read_text().strip()
    evaluation = json.loads((params.paths.reports / "evaluation.json").read_text())
    out = params.paths.export
    model_uri = log_pyfunc(run_id, out / "saved_model", out / "labels.txt", _example_wav(params), params.features.sample_rate,
                           params.evaluate.streaming.model_dump())  # fmt: skip
    tags = {"test_accuracy": evaluation["testing"]["accuracy"], "model": params.train.model.name,
            "int8_test_accuracy": report["testing"]["accuracy"]["int8"]}  # fmt: skip
    for name, values in evaluation.items():
        if name not in {"testing", "streaming"} and "accuracy" in values:
            tags[f"{name}_accuracy"] = values["accuracy"]
    name = params.freeze.registered_model_name
    version = register(name, model_uri, run_id, tags)
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


def run_freeze(params: Params) -> dict:
    """Export, check, write export.json, then register the model version."""
    from pipeline.export.tflite import int8_gate

    for needed, stage in ((params.paths.model / "run_id.txt", "train"), (params.paths.reports / "evaluation.json", "evaluate")):
        if not needed.is_file():  # checked before the minutes of export, not after
            raise DataError(f"{needed}: not found; run the {stage} stage first")
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
