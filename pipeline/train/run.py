"""The train stage's library function: train, then write the model, history and metrics and log them to MLflow."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipeline import artifacts
from pipeline.config import Params
from pipeline.fileio import write_json, write_keras, write_text
from pipeline.metrics import plot_confusion
from pipeline.tracking import Run, TrackingError, check_tracking, tracking_uri
from pipeline.tracking.runs import flatten, split_digest
from pipeline.tracking.tensorboard import hparam_values

log = logging.getLogger(__name__)


def data_version(params: Params) -> str:
    """The DVC hash of the split output (from dvc.lock) or, outside DVC, a hash of the manifest."""
    return split_digest(params.paths.split)


def data_tags(params: Params) -> dict[str, str]:
    """What the run was trained on, for its tags and description: the sources and a profile word."""
    kinds = {source.kind for source in params.data.sources}
    profile = "generated voices" if kinds == {"synthetic"} else "recorded clips" if "synthetic" not in kinds else "generated + recorded"
    return {"data_sources": ", ".join(f"{s.name} ({s.kind})" for s in params.data.sources), "profile": profile,
            "data_version": data_version(params)}  # fmt: skip


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
    manifest = pd.read_parquet(artifacts.MANIFEST.require(params.paths))
    dumped = params.model_dump(mode="json")
    tags = data_tags(params)
    hparams = hparam_values({k: v for k, v in flatten(dumped).items() if k.startswith(("seed", "train.", "features."))})
    opened: list[Run] = []

    def open_run(run_id: str | None) -> Run:
        run = Run.reopen(run_id) if run_id else None
        if run is None:
            run = Run.start(params.train.experiment, params.train.model.name, dumped, tags)
            for name in ("training", "validation"):
                run.dataset(manifest[manifest["set"] == name], name, name, tags["data_version"], str(params.paths.split))
            run.text(yaml.safe_dump(dumped, sort_keys=False), "config/params.yaml")  # the validated params this run used
            if Path("dvc.lock").is_file():
                run.artifact(Path("dvc.lock"), "config")
        else:
            log.info("continuing MLflow run %s", run.run_id)
        opened.append(run)
        return run

    def close_stale(run_ids: list[str]) -> None:  # runs of checkpoints that other params/data/code made useless
        for run_id in run_ids:
            Run.mark_killed(run_id)

    try:
        result = train(params, params.paths.checkpoints, params.paths.logs / "train", open_run=open_run, progress=progress,
                       hparams=hparams, close_stale=close_stale)  # fmt: skip
    except TrackingError:
        raise  # the server is gone: nothing to mark; the message says what is kept
    except BaseException:
        for run in opened:
            run.finish("KILLED", quiet=True)
        raise
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
    if result.hard_negatives is not None:  # train.hard_negatives: the windows the second round added
        metrics["hard_negatives"] = sum(result.hard_negatives.values())
    run_facts = {"resumed_from_step": result.resumed_from, "wall_seconds": round(result.seconds, 2)}
    paths = params.paths
    out.mkdir(parents=True, exist_ok=True)
    write_keras(artifacts.MODEL.path(paths), model)
    write_json(artifacts.HISTORY.path(paths), result.history)
    write_json(artifacts.TRAIN_METRICS.path(paths), metrics)
    write_text(artifacts.TRAIN_LABELS.path(paths), "\n".join(labels) + "\n")
    summary = model_summary(model)
    write_text(artifacts.MODEL_SUMMARY.path(paths), summary)
    plot_confusion(matrix, labels, artifacts.VALIDATION_CONFUSION.path(paths), f"validation, step {final.get('step', result.steps)}")
    run.metrics({"train/wall_seconds": run_facts["wall_seconds"]}, step=result.steps)
    if result.hard_negatives is not None:
        run.metrics({"train/hard_negatives": metrics["hard_negatives"]}
                    | {f"train/hard_negatives_{name.strip('_')}": n for name, n in result.hard_negatives.items()},
                    step=result.steps)  # fmt: skip
    run.tags({"train/parameters": metrics["parameters"], "train/steps": metrics["steps"],
              "train/resumed_from_step": run_facts["resumed_from_step"], "tensorboard_dir": str(result.log_dir)})  # fmt: skip
    run.refresh_note()
    run.text(summary, "model_summary.txt")
    run.artifact(artifacts.HISTORY.path(paths))
    write_text(artifacts.RUN_ID.path(paths), run.run_id + "\n")
    run.finish()
    if result.checkpoints is not None:
        result.checkpoints.clear()
    return {**metrics, **run_facts}
