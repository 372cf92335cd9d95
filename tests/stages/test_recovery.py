"""Failing stages cost no outputs and say what happened in one line: the `check` stage runs before DVC deletes
anything, every MLflow stage checks the tracking server first, a freeze rerun reuses its registered version, the
download stage's tracked files hold no wall-clock time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params
from tests.conftest import REPO, tiny_params_dict, write_tone_corpus

UNREACHABLE = "http://127.0.0.1:9"


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def _entries(items: list) -> list[tuple[str, dict]]:
    return [(i, {}) if isinstance(i, str) else next(iter(i.items())) for i in items or []]


def test_every_stage_is_downstream_of_check():
    """DVC runs `check` before any stage whose outputs it would delete (an out -> dep path edge, transitively)."""
    stages = _dvc_yaml()["stages"]
    outs = {stage: [path for path, _ in _entries(spec.get("outs")) + _entries(spec.get("metrics"))]
            for stage, spec in stages.items()}  # fmt: skip

    def upstream(stage: str, seen: set[str]) -> set[str]:
        for dep in stages[stage].get("deps", []):
            for other, paths in outs.items():
                if other not in seen and any(dep == p or dep.startswith(p.rstrip("/") + "/") for p in paths):
                    seen.add(other)
                    upstream(other, seen)
        return seen

    assert set(stages) - {"check"} and all("check" in upstream(s, set()) for s in stages if s != "check")
    assert stages["check"]["params"] == [{"params.yaml": None}], "check reruns on any params change"


def test_small_outputs_are_cached_so_dvc_checkout_restores_them():
    for stage, spec in _dvc_yaml()["stages"].items():
        for path, options in _entries(spec.get("outs")):
            assert options.get("cache", True), f"{stage}: {path} is not cached; `dvc checkout` could not restore it"


def _stage(name: str, params_file: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"stages.{name}", str(params_file)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["check", "evaluate", "freeze"])
def test_an_unreachable_tracking_server_fails_the_stage_with_one_line(stage, tmp_path):
    """Before any work: freeze used to export for minutes, retry MLflow for minutes, then print a traceback."""
    raw = tiny_params_dict(tmp_path, paths={"export": str(tmp_path / "export")})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "run_id.txt").write_text("0" * 32 + "\n")  # what evaluate and freeze need first
    (tmp_path / "model" / "model.keras").write_bytes(b"")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "evaluation.json").write_text("{}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": UNREACHABLE, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = _stage(stage, tmp_path / "params.yaml", env)
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow tracking server {UNREACHABLE} is unreachable"), lines
    assert not (tmp_path / "export").exists(), "nothing exported before the server was found missing"


@pytest.mark.slow
def test_a_lost_server_mid_training_ends_with_one_line_keeping_the_checkpoint(tiny_data, tmp_path):
    """The server answers at the start, then is gone: MLflow's retries are bounded, the message says what is kept."""
    from pipeline.tracking import Run, TrackingError
    from pipeline.train.loop import train

    root, _ = tiny_data
    params = parse_params(tiny_params_dict(root, paths={"checkpoints": str(tmp_path / "ckpt")}))
    with pytest.raises(TrackingError) as error:  # a run on a port nobody listens on: the first metric fails
        train(params, tmp_path / "ckpt", tmp_path / "logs", open_run=lambda run_id: Run("0" * 32, UNREACHABLE))
    message = str(error.value)
    assert "\n" not in message and UNREACHABLE in message, message
    assert "at step 100; the checkpoint of step 50 is kept in" in message and "to resume" in message, message
    assert [p.name for p in (tmp_path / "ckpt").glob("*/step-*.npz")] == ["step-00000050.npz"]


@pytest.fixture(scope="module")
def dvc_copy(tmp_path_factory):
    """A copy of the repository (tracked files) with tiny params, through `dvc repro download` (check + download)."""
    work = tmp_path_factory.mktemp("dvc") / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        rel = Path(name.decode())
        if (REPO / rel).is_file() and rel.parts[0] in {"pipeline", "stages", ".dvc", "dvc.yaml", ".dvcignore", ".gitignore"}:
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, work / rel)
    write_tone_corpus(work / "corpus", ["yes", "no", "cat", "dog"], speakers=6, reps=1, noise_seconds=4)
    raw = tiny_params_dict(Path("."))
    raw["paths"] = {**{name: str(Path(value)) for name, value in raw["paths"].items()}, "export": "export"}
    raw = parse_params(raw).model_dump(mode="json")  # every key written out: DVC reads the ones a stage lists
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    first = _dvc(["repro", "download"], work, env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "Running stage 'check'" in first.stdout and "Running stage 'download'" in first.stdout
    return work, env, raw


def _dvc(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_an_invalid_params_value_fails_at_check_and_leaves_every_output_in_place(dvc_copy):
    work, env, raw = dvc_copy
    before = _tree(work / "raw")
    assert before and "tones/source.json" in before
    broken = json.loads(json.dumps(raw))
    broken["features"] = {**broken.get("features", {}), "sample_rate": -16000}  # download depends on it
    (work / "params.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    failed = _dvc(["repro", "download"], work, env)
    assert failed.returncode != 0
    assert "Running stage 'check'" in failed.stdout and "Running stage 'download'" not in failed.stdout
    errors = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "features.sample_rate" in errors[0], failed.stdout[-2000:] + failed.stderr[-2000:]
    assert "Traceback" not in failed.stdout + failed.stderr
    assert _tree(work / "raw") == before, "DVC deleted nothing: download never started"
    (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    fixed = _dvc(["repro", "download"], work, env)
    assert fixed.returncode == 0 and "Running stage 'download'" not in fixed.stdout, fixed.stdout[-2000:]
    assert _tree(work / "raw") == before


@pytest.mark.slow
def test_dvc_checkout_restores_a_cached_small_output(dvc_copy):
    work, env, _ = dvc_copy
    marker = work / "reports" / "params_check.json"
    content = marker.read_bytes()
    marker.unlink()
    out = _dvc(["checkout", "check"], work, env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert marker.read_bytes() == content


@pytest.mark.slow
def test_regenerated_identical_clips_give_identical_tracked_bytes(tmp_path):
    """source.json holds no wall-clock time: the DVC hash of data/raw only changes when a clip does."""
    from pipeline.data.sources import fetch_sources

    sources = [{"kind": "synthetic", "speakers": 2, "repetitions": 1, "noise_seconds": 2, "piper": False, "kokoro_blends": 0}]
    trees = []
    for attempt in range(2):
        params = parse_params({"seed": 1, "paths": {"raw": str(tmp_path / f"raw{attempt}")},
                               "data": {"keywords": ["yes"], "unknown_words": ["cat"], "sources": sources}})  # fmt: skip
        fetch_sources(params, progress=False)
        trees.append(_tree(params.paths.raw))
    assert trees[0] == trees[1]
    summary = json.loads((tmp_path / "raw0" / "synthetic" / "source.json").read_text())
    assert "seconds" not in summary and summary["clips"] == 2 * 2
