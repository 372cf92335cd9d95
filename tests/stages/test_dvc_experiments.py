"""The experiment loop in DVC on a tiny pipeline: a run and an experiment compare in `dvc exp show`, `dvc metrics
diff` and `dvc plots diff`; pushed to a local remote, a fresh clone pulls and `dvc repro` has nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsLoader, parse_params
from tests.conftest import REPO, tiny_params_dict, write_tone_corpus

pytestmark = pytest.mark.slow

GIT_USER = ["-c", "user.name=kws-test", "-c", "user.email=test@kws.local"]
EXPERIMENT = "train.model.dropout=0.2"  # any train param: train, evaluate and freeze rerun (the default profile's l2)


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _merge(base: dict, override: dict) -> dict:
    """`base` with `override` laid over it: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _tiny_params(corpus: Path) -> dict:
    """The repository's params.yaml (every key DVC tracks, the relative paths) on the tiny tone corpus."""
    base = yaml.load((REPO / "params.yaml").read_text(), Loader=ParamsLoader)
    tiny = tiny_params_dict(corpus.parent, features={"preprocess": "mfcc", "embedding": {"finetune": {"convs": 0}}},
                            train={"steps": [60, 20], "eval_step_interval": 20, "save_step_interval": 40,
                                   "neural_repeats": 1,  # the tone corpus has no neural voices to oversample
                                   "hard_negatives": {"hours": 0},  # mined on the speech embedding's sequence only
                                   "model": {"name": "tiny_conv", "filters": 8, "dropout": 0.5}},
                            evaluate={"extra_sets": [], "streaming": {"recording_seconds": 20}},
                            freeze={"representative_clips": 20, "latency_repeats": 2, "max_int8_drop": 100})  # fmt: skip
    tiny.pop("paths")  # DVC outputs must live inside the repository: keep params.yaml's relative paths
    raw = _merge(base, tiny)
    raw["train"]["model"] = tiny["train"]["model"]  # another architecture: none of the default head's keys
    parse_params(raw)
    return raw


@pytest.fixture(scope="module")
def experiment_repo(tmp_path_factory):
    """A copy of the tracked files on tiny params: `dvc repro`, committed, pushed to a local remote, then one `dvc exp run`."""
    root = tmp_path_factory.mktemp("dvc_exp")
    work, corpus = root / "repo", root / "corpus"
    write_tone_corpus(corpus, ["yes", "no", "cat", "dog"], speakers=10, reps=2, noise_seconds=10)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        rel = Path(name.decode())
        if (REPO / rel).is_file() and (len(rel.parts) == 1 or rel.parts[0] in {"pipeline", "stages", ".dvc"}):
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, work / rel)
    (work / "dvc.lock").unlink(missing_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(_tiny_params(corpus), sort_keys=False))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "CI": "true",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "MLFLOW_ARTIFACT_ROOT": str(root / "mlartifacts"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    git = ["git", *GIT_USER]
    _run(["git", "init", "-q", "-b", "main"], work, env)
    _run([*git, "add", "-A"], work, env)
    _run([*git, "commit", "-qm", "tiny pipeline"], work, env)
    repro = _run(["dvc", "repro"], work, env)
    remote = root / "remote"
    _run(["dvc", "remote", "add", "-d", "shared", str(remote)], work, env)
    _run([*git, "add", "-A"], work, env)
    _run([*git, "commit", "-qm", "pipeline run, remote"], work, env)
    pushed = _run(["dvc", "push"], work, env)
    exp_out = _run(["dvc", "exp", "run", "--name", "tiny-dropout", "-S", EXPERIMENT], work, env)
    return {"root": root, "work": work, "env": env, "repro": repro, "pushed": pushed, "exp_out": exp_out, "exp": "tiny-dropout"}


def _metric_values(row: dict) -> dict[str, dict]:
    """exp show --json: one revision's metrics per file (a file DVC could not load keeps its `error`)."""
    metrics = (row.get("data") or {}).get("metrics") or {}
    return {path: entry.get("data", entry) if "error" not in entry else entry for path, entry in metrics.items()}


def test_exp_show_lists_the_run_and_the_experiment_with_every_metric(experiment_repo):
    work, env, exp = experiment_repo["work"], experiment_repo["env"], experiment_repo["exp"]
    rows = json.loads(_run(["dvc", "exp", "show", "--json"], work, env))
    (baseline,) = [row for row in rows if row.get("name") == "main"]
    (experiment,) = [e["revs"][0] for e in baseline.get("experiments") or [] if e.get("name") == exp]
    expected = {"models/train/metrics.json", "reports/evaluation.json", "models/export/metrics.json", "reports/split_metrics.json",
                "models/backbone/finetune.json"}  # fmt: skip
    for row in (baseline, experiment):
        assert not row.get("error"), row
        metrics = _metric_values(row)
        assert set(metrics) == expected, metrics
        assert not any("error" in values for values in metrics.values()), metrics
        assert 0 <= metrics["reports/evaluation.json"]["testing"]["accuracy"] <= 1
        assert metrics["reports/split_metrics.json"]["clips"]["testing"] > 0
        assert metrics["models/backbone/finetune.json"] == {"convs": 0}  # off: the pretrained backbone
    assert _metric_values(baseline)["models/train/metrics.json"] != _metric_values(experiment)["models/train/metrics.json"]
    table = _run(["dvc", "exp", "show", "--no-pager", "--only-changed"], work, env)
    assert exp in table and "main" in table and "!" not in table  # `!`: a revision's metrics could not be loaded


def test_split_counts_are_an_output_not_a_metric(experiment_repo):
    work, env = experiment_repo["work"], experiment_repo["env"]
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], work, env))
    (workspace,) = shown.values()  # keyed by the repository's path ("" for the current one)
    files = set(workspace["data"])
    assert "reports/split.json" not in files and "reports/split_metrics.json" in files
    assert (work / "reports/split.json").is_file()


def test_metrics_diff_compares_main_with_the_experiment(experiment_repo):
    work, env, exp = experiment_repo["work"], experiment_repo["env"], experiment_repo["exp"]
    diff = json.loads(_run(["dvc", "metrics", "diff", "main", exp, "--json", "--all"], work, env))
    assert {"models/train/metrics.json", "reports/evaluation.json", "models/export/metrics.json"} <= set(diff)
    loss = diff["models/train/metrics.json"]["validation_loss"]
    assert loss["old"] != loss["new"] and loss["diff"] == pytest.approx(loss["new"] - loss["old"])


def test_plots_diff_draws_curves_per_class_bars_and_confusion_for_both(experiment_repo):
    work, env, exp = experiment_repo["work"], experiment_repo["env"], experiment_repo["exp"]
    out = json.loads(_run(["dvc", "plots", "diff", "main", exp, "--json"], work, env))
    errors = [e for e in out.get("errors") or [] if "real_dev" not in e.get("source", "")]  # tiny params: no real clips
    assert errors == []
    fields = {"training_accuracy": {"step", "train_accuracy", "validation_accuracy"},
              "training_loss": {"step", "train_loss", "validation_loss"}, "confusion_testing": {"actual", "predicted"},
              "precision_testing": {"label", "precision"}, "recall_testing": {"label", "recall"}}  # fmt: skip
    for plot, expected in fields.items():
        (entry,) = out["data"][plot]
        values = entry["content"]["data"]["values"]
        assert {point["rev"] for point in values} == {"main", exp}, plot
        assert expected <= set(values[0]), (plot, values[0])
    confusion = json.dumps(out["data"]["confusion_testing"][0]["content"])  # as the PNGs: predicted across, actual down
    assert '"x": {"field": "predicted"' in confusion and '"y": {"field": "actual"' in confusion


def test_a_fresh_clone_pulls_from_the_remote_and_has_nothing_to_rerun(experiment_repo):
    root, work, env = experiment_repo["root"], experiment_repo["work"], experiment_repo["env"]
    assert any((root / "remote").rglob("*")), experiment_repo["pushed"]
    clone = root / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], root, env)
    _run(["dvc", "pull"], clone, env)
    status = _run(["dvc", "status"], clone, env)
    assert "up to date" in status, status
    repro = _run(["dvc", "repro"], clone, env)
    assert "Running stage" not in repro, repro
    for stage in ("download", "split", "finetune", "features", "train", "evaluate", "freeze"):
        assert f"Stage '{stage}' didn't change" in repro, repro
    assert (clone / "models/export/model_int8.tflite").is_file()
