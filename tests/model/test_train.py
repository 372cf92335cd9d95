"""The train stage: learning, MLflow records, resumable checkpoints, fail-fast tracking, reproducibility."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.config import parse_params
from pipeline.train.checkpoint import fingerprint
from pipeline.train.schedule import batch_indices, learning_rate_at, total_steps
from pipeline.tracking import TrackingError
from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow


def test_schedule_is_piecewise_constant():
    assert total_steps([15000, 3000]) == 18000
    assert learning_rate_at(0, [15000, 3000], [1e-3, 1e-4]) == 1e-3
    assert learning_rate_at(14999, [15000, 3000], [1e-3, 1e-4]) == 1e-3
    assert learning_rate_at(15000, [15000, 3000], [1e-3, 1e-4]) == 1e-4
    assert learning_rate_at(99999, [15000, 3000], [1e-3, 1e-4]) == 1e-4


def test_batches_cover_each_epoch_and_repeat_for_a_step():
    rows = np.concatenate([batch_indices(10, 5, seed=1, step=s) for s in range(2)])
    assert sorted(rows) == list(range(10))
    np.testing.assert_array_equal(batch_indices(10, 4, 1, 7), batch_indices(10, 4, 1, 7))
    assert not np.array_equal(batch_indices(1000, 10, 1, 0), batch_indices(1000, 10, 2, 0))


def test_fingerprint_changes_with_params_and_data(tmp_path):
    data = tmp_path / "a.npy"
    data.write_bytes(b"1")
    base = fingerprint({"lr": 1}, [data])
    assert fingerprint({"lr": 2}, [data]) != base
    data.write_bytes(b"2")
    assert fingerprint({"lr": 1}, [data]) != base


def test_tiny_model_learns_and_writes_outputs(tiny_trained):
    root, params, metrics = tiny_trained
    assert metrics["validation_accuracy"] >= 0.6, metrics  # 4 classes, chance ≈ 0.25-0.4
    assert metrics["steps"] == 200 and metrics["resumed_from_step"] == 0
    written = json.loads((params.paths.model / "metrics.json").read_text())
    assert "wall_seconds" not in written and "resumed_from_step" not in written, "metrics.json: the same model, the same bytes"
    for name in ("model.keras", "history.json", "metrics.json", "labels.txt", "summary.txt", "validation_confusion.png", "run_id.txt"):
        assert (params.paths.model / name).stat().st_size > 0, name
    history = json.loads((params.paths.model / "history.json").read_text())
    assert [h["step"] for h in history] == [100, 200]
    assert not any(params.paths.checkpoints.glob("*/step-*.npz")), "checkpoints are cleared after success"
    assert list((params.paths.logs / "train").glob("*/events.out.tfevents.*")), "TensorBoard scalars written"


def test_mlflow_run_has_params_metrics_and_confusion_artifacts(tiny_trained, mlflow_env):
    import mlflow

    root, params, _ = tiny_trained
    client = mlflow.MlflowClient(tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"])
    run = client.get_run((params.paths.model / "run_id.txt").read_text().strip())
    assert run.data.params["train.model.name"] == "tiny_conv"
    assert run.data.params["seed"] == "3"
    tags = run.data.tags
    assert tags["data_version"] and tags["git_commit"] == tags["mlflow.source.git.commit"]
    assert run.info.run_name.startswith("tiny_conv-") and len(run.info.run_name) == len("tiny_conv-") + 6
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL" and tags["profile"] == "recorded clips"
    assert "tiny_conv" in tags["mlflow.note.content"] and "validation accuracy" in tags["mlflow.note.content"]
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    for name in ("validation/accuracy", "validation/loss", "train/accuracy", "train/loss", "train/learning_rate"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [100, 200], name
    assert not {"train_accuracy", "validation_accuracy", "train/parameters", "train/steps"} & set(run.data.metrics)
    assert int(tags["train/parameters"]) > 0 and tags["train/steps"] == "200", "counts are tags, not metrics"
    history = json.loads((params.paths.model / "history.json").read_text())
    # the logged training loss is the plain cross-entropy (no L2), like the validation loss
    assert run.data.metrics["train/loss"] == pytest.approx(history[-1]["train_loss"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "confusion")}
    assert {f"confusion/step_000{s}00.{ext}" for s in (1, 2) for ext in ("json", "png")} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "config")} >= {"config/params.yaml"}
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    # evaluate (run before this module in the suite) adds its sets to the same session-scoped run
    assert {"training", "validation"} <= set(inputs) and inputs["training"] == tags["data_version"][:36]
    board = params.paths.logs / "train" / run.info.run_name
    assert tags["tensorboard_dir"] == str(board) and list(board.glob("events.out.tfevents.*")), "TensorBoard run named like MLflow's"
    events = b"".join(p.read_bytes() for p in board.glob("events.out.tfevents.*"))
    assert b"_hparams_/session_start_info" in events and b"train.model.name" in events, "hyper-parameters in the HParams tab"


def test_same_params_give_the_same_model(tiny_trained, tmp_path):
    from pipeline.train.run import run_train

    root, params, first = tiny_trained
    raw = tiny_params_dict(root, paths={"model": str(tmp_path / "model"), "checkpoints": str(tmp_path / "ckpt"),
                                        "logs": str(tmp_path / "logs")})  # fmt: skip
    second = run_train(parse_params(raw))
    assert second["validation_accuracy"] == first["validation_accuracy"]
    assert second["validation_loss"] == pytest.approx(first["validation_loss"], abs=1e-6)


def test_unreachable_tracking_server_fails_fast(tiny_data, monkeypatch):
    from pipeline.train.run import run_train

    _, params = tiny_data
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    began = time.time()
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        run_train(params)
    assert time.time() - began < 10


def test_stage_prints_one_line_for_an_unreachable_server(tiny_data, tmp_path):
    root, _ = tiny_data
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-m", "stages.train", str(root / "params.yaml")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("error: MLflow tracking server http://127.0.0.1:9")
    assert "Traceback" not in out.stderr


def test_embedding_head_trains_on_embedded_views_of_a_tiny_corpus(tiny_data, mlflow_env, tmp_path):
    """The default kind of model end to end on the tiny corpus: the features stage embeds K views of every
    training clip once (frozen backbone), the head trains on them and scores the held-out speakers."""
    from pipeline.features.extract import run_features
    from pipeline.inference import load_keras
    from pipeline.train.run import run_train

    root, _ = tiny_data
    raw = tiny_params_dict(
        root,
        paths={name: str(tmp_path / name) for name in ("features", "model", "checkpoints", "logs")},
        features={"preprocess": "speech_embedding", "embedding": {"views": 2}},
        train={"steps": [200], "learning_rate": [0.003], "eval_step_interval": 200,
               "model": {"name": "embedding_head", "filters": 16, "l2": 0.001, "dropout": 0.1}},
    )  # fmt: skip
    params = parse_params(raw)
    description = run_features(params)
    training = np.load(params.paths.features / "training_features.npy", mmap_mode="r")
    clips = len(np.load(params.paths.split / "training_labels.npy"))
    assert training.shape == (2, clips, 16, 96) and description["sets"]["training"]["views"] == 2
    assert not np.allclose(training[0], training[1]), "view 1 is augmented, not a copy of the clean view"
    metrics = run_train(params)
    assert metrics["validation_accuracy"] >= 0.6, metrics
    scorer = load_keras(params.paths.model / "model.keras", params.features)
    audio = np.load(params.paths.split / "testing_audio.npy")
    labels = np.load(params.paths.split / "testing_labels.npy")
    assert (scorer.scores(audio).argmax(1) == labels).mean() >= 0.6  # raw audio through the shared embedding frontend


def test_stale_checkpoint_runs_are_closed_before_their_folders_are_removed(tiny_data, tmp_path):
    """A checkpoint of other params names its MLflow run; that run is closed (close_stale) while the folder still
    exists, so a training that dies later never leaves it RUNNING with nothing pointing at it. A failure while
    closing keeps the folder (and the run id in it) for the next try."""
    from pipeline.train.loop import train

    _, params = tiny_data
    stale = tmp_path / "ckpt" / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "run.json").write_text(json.dumps({"run_id": "r-old"}))
    seen: list = []

    def close_stale(run_ids):
        seen.append((list(run_ids), stale.is_dir()))
        raise RuntimeError("tracking store gone")

    with pytest.raises(RuntimeError, match="tracking store gone"):
        train(params, tmp_path / "ckpt", tmp_path / "logs", close_stale=close_stale)
    assert seen == [(["r-old"], True)]
    assert (stale / "run.json").is_file(), "the folder stays when its run could not be closed"
