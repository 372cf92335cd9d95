"""The train stage's library function: train, then write the model, history and metrics and log them to MLflow."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import artifacts
from pipeline.config import Params
from pipeline.fileio import atomic_path, write_json, write_text
from pipeline.metrics import plot_confusion
from pipeline.tracking import Run, check_tracking, tracking_uri

log = logging.getLogger(__name__)


def data_version(params: Params) -> str:
    """The DVC hash of the split output (from dvc.lock) or, outside DVC, a hash of the manifest."""
    lock = Path("dvc.lock")
    if lock.exists():
        import yaml

        stages = yaml.safe_load(lock.read_text()).get("stages", {})
        for out in stages.get("split", {}).get("outs", []):
            if Path(out["path"]) == params.paths.split:
                return str(out.get("md5", "unknown"))
    manifest = artifacts.MANIFEST.path(params.paths)
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:32] if manifest.exists() else "unknown"


def model_summary(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def run_train(params: Params, progress: bool = False) -> dict:
    """Open an MLflow run, train with resumable checkpoints, write `paths.model/*` and close the run."""
    from pipeline.train.loop import evaluate_features, load_train_data, train

    check_tracking(tracking_uri())  # before any work: an unreachable server is a one-line error
    out = params.paths.model
    labels = params.labels
    manifest = pd.read_parquet(artifacts.MANIFEST.require(params.paths))
    run = Run.start(
        params.train.experiment,
        run_name=f"{params.train.model.name}",
        params=params.model_dump(mode="json"),
        tags={"data_version": data_version(params), "model": params.train.model.name},
    )
    run.dataset(manifest[manifest["set"] == "training"], "training", "training", str(params.paths.split))
    try:
        result = train(params, params.paths.checkpoints, params.paths.logs / "train" / run.run_id, run=run, progress=progress)
    except BaseException:
        run.finish("KILLED")
        raise
    model = result.model
    data = load_train_data(params)
    matrix, val_loss = evaluate_features(model, data.val_features, data.val_labels, len(labels))
    final = result.history[-1] if result.history else {}
    metrics = {
        "train_accuracy": result.train_accuracy,
        "train_loss": result.train_loss,
        "validation_accuracy": float(np.trace(matrix) / max(matrix.sum(), 1)),
        "validation_loss": val_loss,
        "parameters": int(model.count_params()),
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "wall_seconds": round(result.seconds, 2),
    }
    paths = params.paths
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(artifacts.MODEL.path(paths), ".keras") as tmp:
        model.save(tmp)
    write_json(artifacts.HISTORY.path(paths), result.history)
    write_json(artifacts.TRAIN_METRICS.path(paths), metrics)
    write_text(artifacts.TRAIN_LABELS.path(paths), "\n".join(labels) + "\n")
    summary = model_summary(model)
    write_text(artifacts.MODEL_SUMMARY.path(paths), summary)
    confusion_png = artifacts.VALIDATION_CONFUSION.path(paths)
    plot_confusion(matrix, labels, confusion_png, f"validation, step {final.get('step', result.steps)}")
    run.metrics({k: v for k, v in metrics.items() if k not in {"steps"}}, step=result.steps)
    run.artifact(confusion_png, "confusion")
    run.text(summary, "model_summary.txt")
    run.artifact(artifacts.HISTORY.path(paths))
    write_text(artifacts.RUN_ID.path(paths), run.run_id + "\n")
    run.finish()
    if result.checkpoints is not None:
        result.checkpoints.clear()
    return metrics
