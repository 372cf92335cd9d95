"""The train stage's library function: train, then write the model, history and metrics and log them to MLflow."""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import Params
from pipeline.fileio import atomic_path, write_json, write_text
from pipeline.metrics import plot_confusion
from pipeline.tracking import Run, TrackingError, check_tracking, tracking_uri

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
    manifest = params.paths.split / "manifest.parquet"
    return hashlib.sha256(manifest.read_bytes()).hexdigest()[:32] if manifest.exists() else "unknown"


def model_summary(model) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))
    return buffer.getvalue()


def run_train(params: Params, progress: bool = False) -> dict:
    """Open (or, when resuming, continue) an MLflow run, train with resumable checkpoints, write `paths.model/*`.

    Returns the figures of `metrics.json` plus `resumed_from_step` and `wall_seconds` (logged, not written: they
    differ between an interrupted and an uninterrupted run that reach the same model).
    """
    from pipeline.train.loop import evaluate_features, load_train_data, train

    check_tracking(tracking_uri())  # before any work: an unreachable server is a one-line error
    out = params.paths.model
    labels = params.labels
    manifest = pd.read_parquet(params.paths.split / "manifest.parquet")
    opened: list[Run] = []

    def open_run(run_id: str | None) -> Run:
        run = Run.reopen(run_id) if run_id else None
        if run is None:
            run = Run.start(params.train.experiment, run_name=f"{params.train.model.name}", params=params.model_dump(mode="json"),
                            tags={"data_version": data_version(params), "model": params.train.model.name})  # fmt: skip
            run.dataset(manifest[manifest["set"] == "training"], "training", "training", str(params.paths.split))
        else:
            log.info("continuing MLflow run %s", run.run_id)
        opened.append(run)
        return run

    try:
        result = train(params, params.paths.checkpoints, params.paths.logs / "train", open_run=open_run, progress=progress)
    except TrackingError:
        raise  # the server is gone: nothing to mark; the message says what is kept
    except BaseException:
        for run in opened:
            run.finish("KILLED", quiet=True)
        raise
    for stale in result.stale_runs:  # runs of checkpoints that other params/data/code made useless: never left RUNNING
        Run.mark_killed(stale)
    run = result.run
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
    }
    run_facts = {"resumed_from_step": result.resumed_from, "wall_seconds": round(result.seconds, 2)}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.keras", ".keras") as tmp:
        model.save(tmp)
    write_json(out / "history.json", result.history)
    write_json(out / "metrics.json", metrics)
    write_text(out / "labels.txt", "\n".join(labels) + "\n")
    summary = model_summary(model)
    write_text(out / "summary.txt", summary)
    plot_confusion(matrix, labels, out / "validation_confusion.png", f"validation, step {final.get('step', result.steps)}")
    run.metrics({**{k: v for k, v in metrics.items() if k not in {"steps"}}, **run_facts}, step=result.steps)
    run.artifact(out / "validation_confusion.png", "confusion")
    run.text(summary, "model_summary.txt")
    run.artifact(out / "history.json")
    write_text(out / "run_id.txt", run.run_id + "\n")
    run.finish()
    if result.checkpoints is not None:
        result.checkpoints.clear()
    return {**metrics, **run_facts}
