"""The shared tracking server: a throwaway PostgreSQL cluster on 127.0.0.1, `mlflow server` on it with proxied
artifacts, train -> evaluate -> freeze -> promote against it, and two training stages logging at the same time."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params
from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow
MODEL_NAME = "kws_server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """PostgreSQL 15 + MLflow server for this module; both stopped (and the folder removed) at the end."""
    from pipeline.tracking.server import PostgresCluster, ServerError, pg_binary, start_server, stop_process

    try:
        pg_binary("initdb")
    except ServerError as error:
        pytest.skip(str(error))
    folder = Path(tempfile.mkdtemp(prefix="kws-pg-", dir="/tmp"))
    folder.chmod(0o711)  # under root, PostgreSQL runs as the postgres user: it must reach its folder
    cluster = PostgresCluster(folder / "pg", _free_port())
    process = None
    try:
        cluster.init()
        cluster.start()
        cluster.create_database("mlflow")
        port = _free_port()
        process = start_server(cluster.uri("mlflow"), folder / "artifacts", port, folder / "server.log", workers=2)
        yield {"uri": f"http://127.0.0.1:{port}", "artifacts": folder / "artifacts", "backend": cluster.uri("mlflow")}
    finally:
        if process is not None:
            stop_process(process)
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def on_server(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server["uri"])
    yield server


def _stub_latency(*args, **kwargs) -> dict:
    return {"median_ms": 0.0, "p90_ms": 0.0, "repeats": 0, "stubbed": True}


def _params_file(root: Path, work: Path, **overrides) -> Path:
    paths = {name: str(work / name) for name in ("model", "reports", "export", "checkpoints", "logs")}
    raw = tiny_params_dict(root, paths=paths, freeze={"registered_model_name": MODEL_NAME, "latency_repeats": 2,
                           "representative_clips": 20}, evaluate={"streaming": {"recording_seconds": 20}}, **overrides)  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    return work / "params.yaml"


def test_pipeline_against_postgres_server(tiny_data, on_server, tmp_path, monkeypatch):
    """Everything a run logs goes through the server: params, metrics, artifacts (proxied), the registry, promotion."""
    import mlflow
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.evaluate.run import run_evaluate
    from pipeline.export.freeze import run_freeze
    from pipeline.train.run import run_train

    root, _ = tiny_data
    params_file = _params_file(root, tmp_path / "work")
    params = parse_params(yaml.safe_load(params_file.read_text()))
    run_train(params)
    run_evaluate(params)
    monkeypatch.setattr("pipeline.export.serving.saved_model_latency_ms", _stub_latency)
    registered = run_freeze(params)["registered"]
    promoted = CliRunner().invoke(app, ["promote", "--params", str(params_file)])
    assert promoted.exit_code == 0, promoted.output

    client = mlflow.MlflowClient(tracking_uri=on_server["uri"])
    run = client.get_run(registered["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "validation/accuracy")] == [100, 200]
    assert "test/accuracy" in run.data.metrics and "streaming/false_alarms_per_hour" in run.data.metrics
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert "evaluate/clips_testing.csv" in logged
    assert list(on_server["artifacts"].rglob("clips_testing.csv")), "stored in the server's --artifacts-destination"
    assert int(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == registered["version"]
    listed = CliRunner().invoke(app, ["models", "--json", "--params", str(params_file)])
    assert listed.exit_code == 0 and '"champion"' in listed.stdout
    # the runs are rows of the PostgreSQL database, not of a local file
    assert not (REPO / "mlflow.db").exists() or (REPO / "mlflow.db").stat().st_mtime < (tmp_path / "work").stat().st_mtime
    import psycopg2

    with psycopg2.connect(on_server["backend"].replace("+psycopg2", "")) as db, db.cursor() as cursor:
        cursor.execute("SELECT name FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cursor.fetchone()[0] == run.info.run_name


def test_two_concurrent_training_stages_lose_nothing(tiny_data, on_server, tmp_path):
    """Two `python -m stages.train` at once (as `dvc queue start -j 2` runs them) against the server."""
    import mlflow

    root, _ = tiny_data
    env = {**os.environ, "MLFLOW_TRACKING_URI": on_server["uri"], "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "TF_CPP_MIN_LOG_LEVEL": "2"}  # fmt: skip
    jobs = []
    for i, seed in enumerate((11, 12)):
        params_file = _params_file(root, tmp_path / f"w{i}")
        raw = yaml.safe_load(params_file.read_text())
        raw["seed"] = seed
        raw["train"].update(steps=[20, 10], learning_rate=[0.003, 0.001], eval_step_interval=15)  # evaluations at 15, 30
        params_file.write_text(yaml.safe_dump(raw))
        worker_env = {**env, "DVC_EXP_NAME": f"queued-{i}", "DVC_EXP_BASELINE_REV": "0" * 40}
        jobs.append((params_file, subprocess.Popen([sys.executable, "-m", "stages.train", str(params_file)], cwd=REPO,
                                                   env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))  # fmt: skip
    outputs = [job.communicate(timeout=600)[0] for _, job in jobs]
    assert [job.returncode for _, job in jobs] == [0, 0], outputs

    client = mlflow.MlflowClient(tracking_uri=on_server["uri"])
    for i, (params_file, _) in enumerate(jobs):
        run_id = (params_file.parent / "model" / "run_id.txt").read_text().strip()
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.info.run_name == f"queued-{i}"
        assert run.data.tags["dvc_exp_name"] == f"queued-{i}"
        for name in ("train/loss", "train/accuracy", "validation/loss", "validation/accuracy", "train/learning_rate"):
            assert sorted(m.step for m in client.get_metric_history(run_id, name)) == [15, 30], (i, name)
        confusion = {a.path for a in client.list_artifacts(run_id, "confusion")}
        assert {f"confusion/step_0000{s}.{ext}" for s in (15, 30) for ext in ("json", "png")} <= confusion
        assert len(run.data.params) >= 50 and run.data.params["seed"] == str(11 + i)
