"""The evaluate stage: testing-set metrics, extra (real-speech) sets, streaming accuracy; written for DVC and MLflow."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Params
from pipeline.errors import DataError
from pipeline.fileio import atomic_path, write_json
from pipeline.metrics import accuracy, confusion_matrix, format_confusion, per_class, plot_confusion

log = logging.getLogger(__name__)


def score_set(name: str, scores: np.ndarray, targets: np.ndarray, labels: list[str], out: Path) -> dict:
    """Accuracy, per-class scores and the confusion matrix of one set, written as CSV (DVC), PNG and JSON."""
    predicted = scores.argmax(axis=1)
    matrix = confusion_matrix(targets, predicted, len(labels))
    names = np.asarray(labels)
    with atomic_path(out / f"confusion_{name}.csv", ".csv") as tmp:
        pd.DataFrame({"actual": names[targets], "predicted": names[predicted]}).to_csv(tmp, index=False)
    plot_confusion(matrix, labels, out / f"confusion_{name}.png", name)
    classes = per_class(matrix, labels)
    write_json(out / f"per_class_{name}.json", {"labels": labels, "matrix": matrix.tolist(), "per_class": classes})
    log.info("%s: accuracy %.1f%% (N=%d)\n%s", name, 100 * accuracy(matrix), len(targets), format_confusion(matrix))
    return {"accuracy": round(accuracy(matrix), 6), "clips": int(len(targets)),
            "macro_f1": round(float(np.mean([c["f1"] for c in classes.values()])), 6)}  # fmt: skip


def streaming_accuracy(params: Params, predictor, out: Path) -> dict:
    """Score a long seeded recording made from testing clips, as TensorFlow's test_streaming_accuracy does."""
    from pipeline.stream.accuracy import match_detections
    from pipeline.stream.recording import make_recording, write_truth_csv

    split, feat, settings = params.paths.split, params.features, params.evaluate.streaming
    clips = np.load(split / "testing_audio.npy", mmap_mode="r")
    targets = np.load(split / "testing_labels.npy")
    noise = np.load(split / "background_testing.npy")
    audio, truth = make_recording(np.asarray(clips), targets, params.labels, noise, settings, feat.sample_rate, params.seed)
    write_truth_csv(truth, out / "streaming_truth.csv")
    detections = predictor.detect(audio, settings)
    with atomic_path(out / "streaming_detections.csv", ".csv") as tmp:
        pd.DataFrame([d.__dict__ for d in detections], columns=["label", "time_ms", "score"]).to_csv(tmp, index=False)
    stats = match_detections(detections, truth, settings.time_tolerance_ms, duration_ms=len(audio) * 1000 / feat.sample_rate)
    stats["mode"] = predictor.stream_mode(settings)
    return {k: round(float(v), 6) if isinstance(v, float) else v for k, v in stats.items()}


def run_evaluate(params: Params) -> dict:
    """Write `reports/evaluate/*` and add the figures to the training run in MLflow."""
    from pipeline.evaluate.sets import load_folder_set
    from pipeline.tracking import Run

    out, labels, feat = params.paths.reports / "evaluate", params.labels, params.features
    run_id_file = params.paths.model / "run_id.txt"
    if not run_id_file.exists():
        raise DataError(f"{run_id_file}: not found; run the train stage first")
    run = Run.resume(run_id_file.read_text().strip())
    from pipeline.inference import load_keras

    scorer = load_keras(params.paths.model / "model.keras", feat, params.evaluate.batch_size)
    test_features = np.load(params.paths.features / "testing_features.npy")
    test_targets = np.load(params.paths.split / "testing_labels.npy").astype(np.int64)
    test_scores = scorer.scores_from_features(test_features)
    metrics: dict[str, dict] = {"testing": score_set("testing", test_scores, test_targets, labels, out)}
    manifest = pd.read_parquet(params.paths.split / "manifest.parquet", columns=["set", "source", "index"])
    testing = manifest[manifest["set"] == "testing"].sort_values("index")
    if testing["source"].nunique() > 1:  # e.g. the real profile: generated and real clips scored apart
        for source, rows in testing.groupby("source"):
            index = rows["index"].to_numpy()
            metrics["testing"][f"accuracy_{source}"] = round(float((test_scores[index].argmax(1) == test_targets[index]).mean()), 6)
    for extra in params.evaluate.extra_sets:
        if not extra.path.is_dir():
            if not extra.optional:
                raise DataError(f"evaluate.extra_sets[{extra.name}].path: folder {extra.path} not found")
            log.warning("extra set %s skipped: %s not found", extra.name, extra.path)
            continue
        folder = load_folder_set(extra.path, labels, feat.sample_rate, feat.clip_samples)
        metrics[extra.name] = score_set(extra.name, scorer.scores(folder.audio), folder.labels, labels, out)
        metrics[extra.name]["skipped_files"] = len(folder.skipped)
    metrics["streaming"] = streaming_accuracy(params, scorer, out)
    write_json(params.paths.reports / "evaluation.json", metrics)
    flat = {f"{name}_{key}": value for name, values in metrics.items() for key, value in values.items()
            if isinstance(value, int | float)}  # fmt: skip
    run.metrics({k.replace("testing_", "test_", 1): v for k, v in flat.items()})
    for report in [*sorted(out.glob("confusion_*.png")), *sorted(out.glob("per_class_*.json"))]:
        run.artifact(report, "evaluate")
    run.artifact(params.paths.reports / "evaluation.json", "evaluate")
    return metrics
