"""Fault injection on the train stage (tiny corpus): `kill -9` of the stage's process group mid-run, a truncated newest
checkpoint, a model-code change after a kill. Each rerun must reach exactly what an uninterrupted run reaches (or start
fresh, saying so in one line), and no MLflow run may be left RUNNING.

One uninterrupted reference run and one killed run are made once for the module (side by side); the three
recoveries then run side by side, each from its own copy of what the kill left (checkpoints, MLflow database).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, tiny_params_dict

pytestmark = pytest.mark.slow

FAULT_TRAIN = {"steps": [200, 100], "learning_rate": [0.003, 0.001], "eval_step_interval": 100, "save_step_interval": 25}
EVAL_STEPS = [100, 200, 300]
KILL_AFTER = 125  # the first checkpoint past the first evaluation: the curve before the kill must survive


def _params(root: Path, work: Path, checkpoints: Path) -> Path:
    raw = tiny_params_dict(root, train=FAULT_TRAIN, paths={"model": str(work / "model"), "checkpoints": str(checkpoints),
                                                           "logs": str(work / "logs")})  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    return work / "params.yaml"


def _env(db: Path, artifacts: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "MLFLOW_ARTIFACT_ROOT": str(artifacts),
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip


def _start(params_file: Path, env: dict, cwd: Path = REPO, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.train", str(params_file)], cwd=cwd, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    """Wait for a stage run; its stderr (log lines, warnings) when it succeeded."""
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return err


def _steps(checkpoints: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in checkpoints.glob("*/step-*.npz"))


def _weights(model_file: Path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(model_file, compile=False).get_weights()


def _curve(uri: str, run_id: str, metric: str = "validation/accuracy") -> list[tuple[int, float]]:
    import mlflow

    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(run_id, metric)
    return sorted({(m.step, m.value) for m in history})


def _status(uri: str, run_id: str | None) -> str | None:
    """A run's status (None: only open the store, which creates its tables on first use)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    if run_id is None:
        client.search_experiments()
        return None
    return client.get_run(run_id).info.status


@pytest.fixture(scope="module")
def faults(tiny_data, tmp_path_factory):
    """A reference run beside a run of the same params killed (SIGKILL to its process group) mid-way; then, side by
    side, the plain rerun (A), a rerun after truncating the newest checkpoint (B), a rerun after a model-code change (C)."""
    root, _ = tiny_data
    base = tmp_path_factory.mktemp("faults")
    env = _env(base / "mlflow.db", base / "artifacts")
    _status(env["MLFLOW_TRACKING_URI"], None)  # create the store's tables once, not in two processes at the same time
    reference = _start(_params(root, base / "reference", base / "reference" / "ckpt"), env)
    victim = _params(root, base / "A", base / "A" / "ckpt")
    proc = _start(victim, env, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not any(s >= KILL_AFTER for s in _steps(base / "A" / "ckpt")):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"the stage ended before it could be killed:\n{proc.stderr.read()[-2000:]}")
    os.killpg(proc.pid, signal.SIGKILL)  # what a power cut or the OOM killer does: no handler runs
    proc.wait()
    (folder,) = (base / "A" / "ckpt").iterdir()
    facts = {"root": root, "base": base, "reference": base / "reference", "kept": _steps(base / "A" / "ckpt"),
             "run_id": json.loads((folder / "run.json").read_text())["run_id"]}  # fmt: skip
    facts["status_after_kill"] = _status(env["MLFLOW_TRACKING_URI"], facts["run_id"])
    for name in ("B", "C"):  # copies of what the kill left
        shutil.copytree(base / "A" / "ckpt", base / name / "ckpt")
        shutil.copy2(base / "mlflow.db", base / name / "mlflow.db")
    newest = max((base / "B" / "ckpt").glob("*/step-*.npz"))
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # what a power cut without fsync leaves
    facts["truncated"] = newest.name
    code = base / "C" / "code"
    for folder in ("pipeline", "stages"):
        shutil.copytree(REPO / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    model = code / "pipeline" / "models" / "tiny_conv.py"
    model.write_text(model.read_text().replace("(10, 8), strides=2", "(8, 8), strides=2"))  # another kernel shape
    _finish(reference)
    envs = {"A": env, **{name: _env(base / name / "mlflow.db", base / "artifacts") for name in ("B", "C")}}
    procs = {name: _start(_params(root, base / name, base / name / "ckpt"), envs[name], cwd=code if name == "C" else REPO)
             for name in ("A", "B", "C")}  # fmt: skip
    for name, proc in procs.items():
        facts[name] = {"stderr": _finish(proc), "uri": envs[name]["MLFLOW_TRACKING_URI"], "work": base / name}
    return facts


def _same_result(work: Path, reference: Path) -> None:
    """Weights, history (every evaluation step) and metrics.json are exactly the uninterrupted run's, and so is
    the whole model.keras (weights, the Dropout layers' generator states, no save time), which DVC hashes."""
    for got, want in zip(_weights(work / "model" / "model.keras"), _weights(reference / "model" / "model.keras"), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (work / "model" / "model.keras").read_bytes() == (reference / "model" / "model.keras").read_bytes()
    history = json.loads((work / "model" / "history.json").read_text())
    assert [h["step"] for h in history] == EVAL_STEPS
    assert history == json.loads((reference / "model" / "history.json").read_text())
    assert (work / "model" / "metrics.json").read_bytes() == (reference / "model" / "metrics.json").read_bytes()


def test_kill_9_then_rerun_equals_an_uninterrupted_run_and_continues_its_mlflow_run(faults):
    kept, run = faults["kept"], faults["A"]
    # the newest two are kept; a kill between writing a checkpoint and pruning the oldest leaves one more
    assert len(kept) in (2, 3) and kept == sorted(kept) and KILL_AFTER <= max(kept) < EVAL_STEPS[-1], f"kept: {kept}"
    assert kept[-1] - kept[-2] == FAULT_TRAIN["save_step_interval"], f"the newest two checkpoints are kept: {kept}"
    assert faults["status_after_kill"] == "RUNNING"  # kill -9: nothing could close it
    _same_result(run["work"], faults["reference"])
    assert (run["work"] / "model" / "run_id.txt").read_text().strip() == faults["run_id"], "the interrupted run is continued"
    assert _status(run["uri"], faults["run_id"]) == "FINISHED"
    reference_run = (faults["reference"] / "model" / "run_id.txt").read_text().strip()
    for metric in ("validation/accuracy", "train/loss"):  # the curve before the kill is kept, the one after matches
        assert _curve(run["uri"], faults["run_id"], metric) == _curve(run["uri"], reference_run, metric)
    assert [s for s, _ in _curve(run["uri"], faults["run_id"])] == EVAL_STEPS
    import tensorflow as tf

    steps = set()
    import mlflow

    board = Path(mlflow.MlflowClient(tracking_uri=run["uri"]).get_run(faults["run_id"]).data.tags["tensorboard_dir"])
    board = board if board.is_absolute() else run["work"] / board  # logs/train/<run name>: named like the MLflow run
    for events in board.glob("events.out.tfevents.*"):
        steps |= {e.step for e in tf.compat.v1.train.summary_iterator(str(events)) for v in e.summary.value
                  if v.tag == "validation_accuracy"}  # fmt: skip
    assert sorted(steps) == EVAL_STEPS, "TensorBoard continues in the same run folder"
    assert f"at step {max(kept)}" in run["stderr"] and "Traceback" not in run["stderr"]
    assert not any((run["work"] / "ckpt").glob("*/step-*.npz")), "checkpoints are cleared after success"


def test_truncated_newest_checkpoint_falls_back_to_the_older_one_with_one_warning(faults):
    run = faults["B"]
    warnings = [line for line in run["stderr"].splitlines() if "unreadable checkpoint" in line]
    assert len(warnings) == 1 and faults["truncated"] in warnings[0], run["stderr"][-2000:]
    assert f"resuming from step {faults['kept'][-2]}" in warnings[0]  # the newest readable one
    assert "Traceback" not in run["stderr"]
    _same_result(run["work"], faults["reference"])
    assert _status(run["uri"], faults["run_id"]) == "FINISHED"


def test_model_code_change_after_a_kill_starts_fresh_with_one_line(faults):
    run = faults["C"]
    notes = [line for line in run["stderr"].splitlines() if "other params, data or code" in line]
    assert len(notes) == 1 and "training from step 0" in notes[0], run["stderr"][-2000:]
    assert "Traceback" not in run["stderr"] and "ValueError" not in run["stderr"]
    history = json.loads((run["work"] / "model" / "history.json").read_text())
    assert [h["step"] for h in history] == EVAL_STEPS
    assert _status(run["uri"], faults["run_id"]) == "KILLED", "the stale checkpoint's run is closed"
    new_run = (run["work"] / "model" / "run_id.txt").read_text().strip()
    assert new_run != faults["run_id"] and _status(run["uri"], new_run) == "FINISHED"
    assert not any((run["work"] / "ckpt").iterdir()), "the stale checkpoint folder is removed, the new one cleared"
