"""MLflow run identity, the paired promotion gate and the model card, on a private SQLite store (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.tracking.card import confusions, model_card
from pipeline.tracking.compare import Paired, mcnemar_exact, pair, refusals, wilson_interval
from pipeline.tracking.runs import RuntimeSettings, note_from, run_identity, split_counts

PARAMS = {"seed": 1, "train": {"model": {"name": "tiny_conv"}, "steps": [10]}}
NAME = "kws_gate"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh SQLite store per test, and no DVC experiment in the environment unless a test sets one."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    return tmp_path


def test_run_name_comes_from_the_dvc_experiment_or_the_params():
    name, tags = run_identity("tiny_conv", PARAMS, "stages/train.py", RuntimeSettings(dvc_exp_name="", dvc_exp_baseline_rev=""))
    other, _ = run_identity("tiny_conv", {**PARAMS, "seed": 2}, "stages/train.py", RuntimeSettings(dvc_exp_name=""))
    assert name.startswith("tiny_conv-") and other.startswith("tiny_conv-") and name != other
    assert "dvc_exp_name" not in tags and tags["mlflow.source.name"] == "stages/train.py"
    exp, exp_tags = run_identity("tiny_conv", PARAMS, "stages/train.py",
                                 RuntimeSettings(dvc_exp_name="aloof-dace", dvc_exp_baseline_rev="ba087dd1"))  # fmt: skip
    assert exp == "aloof-dace" and exp_tags["dvc_exp_name"] == "aloof-dace" and exp_tags["dvc_exp_baseline_rev"] == "ba087dd1"
    assert exp_tags["mlflow.source.git.commit"] == exp_tags["git_commit"] and exp_tags["mlflow.user"]


@pytest.mark.slow
def test_two_dvc_experiments_give_two_named_runs(store, monkeypatch):
    import mlflow

    from pipeline.tracking import Run

    ids = []
    for exp in ("exp-l2-01", "exp-l2-03"):
        monkeypatch.setenv("DVC_EXP_NAME", exp)
        monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef")
        ids.append(Run.start("kws", "tiny_conv", PARAMS, {"profile": "generated voices", "data_sources": "tones (local)"}).run_id)
    client = mlflow.MlflowClient()
    runs = [client.get_run(i) for i in ids]
    assert [r.info.run_name for r in runs] == ["exp-l2-01", "exp-l2-03"]
    assert [r.data.tags["dvc_exp_name"] for r in runs] == ["exp-l2-01", "exp-l2-03"]
    assert all(r.data.tags["dvc_exp_baseline_rev"] == "0123456789abcdef" for r in runs)
    assert "DVC experiment `exp-l2-01`" in runs[0].data.tags["mlflow.note.content"]
    experiment = client.get_experiment(runs[0].info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert runs[0].data.params["train.model.name"] == "tiny_conv"


@pytest.mark.slow
def test_a_run_missing_from_the_store_is_one_line_not_a_traceback(store):
    """evaluate / freeze reopen the train stage's run by id; a model trained against another store (or restored
    by DVC's run cache after a temporary experiment) named a run this store lacks: MLflow raised deep in log_inputs."""
    from pipeline.tracking import Run, TrackingError

    kept = Run.start("kws", "tiny_conv", PARAMS, {"profile": "generated voices", "data_sources": "tones (local)"})
    assert Run.resume(kept.run_id).name == kept.name
    with pytest.raises(TrackingError) as info:
        Run.resume("0123456789abcdef0123456789abcdef")
    message = str(info.value)
    assert "MLflow run 0123456789abcdef0123456789abcdef (the train stage's run_id.txt) is not in the tracking store" in message
    assert "dvc repro -f -s train" in message and "\n" not in message


@pytest.mark.slow
def test_two_runs_logging_one_dataset_at_once_both_keep_it(store, monkeypatch):
    """MLflow looks a dataset up by (experiment, name, digest) and then inserts it; a second run of the same data
    (a reference beside a rerun, two queued DVC experiments) inserting between the two failed the whole stage with
    "UNIQUE constraint failed: datasets...". Here the look-up is made to miss the first run's row once, which is
    exactly what the concurrent writer leaves: the store's real constraint fires, and the stage must carry on."""
    import mlflow
    import sqlalchemy.orm
    from mlflow.store.tracking.dbmodels.models import SqlDataset

    from pipeline.tracking import Run

    frame = pd.DataFrame({"path": ["yes/a.wav", "no/b.wav"], "label": ["yes", "no"]})
    first = Run.start("kws", "tiny_conv", PARAMS, {"profile": "generated voices"})
    first.dataset(frame, "training", "training", "074e0de004ab58a0ce697b77461ae4a9", str(store))
    second = Run.start("kws", "tiny_conv", {**PARAMS, "seed": 2}, {"profile": "generated voices"})
    real_all, missed = sqlalchemy.orm.Query.all, []

    def all_but_the_other_writers_row(query):
        if not missed and query.column_descriptions[0]["entity"] is SqlDataset:
            missed.append(query)
            return []
        return real_all(query)

    monkeypatch.setattr(sqlalchemy.orm.Query, "all", all_but_the_other_writers_row)
    assert second.dataset(frame, "training", "training", "074e0de004ab58a0ce697b77461ae4a9", str(store)) == (
        "training", "074e0de004ab58a0ce697b77461ae4a9")  # fmt: skip
    assert missed, "the look-up was not reached: the test no longer stages the race"
    client = mlflow.MlflowClient()
    for run in (first, second):
        (logged,) = client.get_run(run.run_id).inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("training", "074e0de004ab58a0ce697b77461ae4a9")


@pytest.mark.slow
def test_a_dataset_the_store_refuses_for_another_reason_is_one_line(store, monkeypatch):
    import mlflow

    from pipeline.tracking import Run, TrackingError

    run = Run.start("kws", "tiny_conv", PARAMS, {"profile": "generated voices"})

    def refuse(*_args, **_kwargs):
        raise mlflow.exceptions.MlflowException("Dataset schema exceeds the maximum length")

    monkeypatch.setattr(run.client, "log_inputs", refuse)
    with pytest.raises(TrackingError, match=r"refused dataset 'training' \(Dataset schema exceeds") as info:
        run.dataset(pd.DataFrame({"path": ["a.wav"]}), "training", "training", "d" * 32, str(store))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_two_freezes_registering_a_new_name_at_once_both_get_a_version(store, monkeypatch):
    """The registry is looked up, then the name created; a concurrent freeze creating it in between must not fail."""
    import mlflow

    from pipeline.tracking import Run
    from pipeline.tracking.registry import register

    runs = [Run.start("kws", "tiny_conv", {**PARAMS, "seed": seed}, {"profile": "generated voices"}) for seed in (1, 2)]
    assert register("kws_race", f"runs:/{runs[0].run_id}/model", runs[0].run_id, {"stage": "test"}) == 1
    real_get, hidden = mlflow.MlflowClient.get_registered_model, []

    def not_there_yet(client, name):  # what the second freeze saw before the first one created the name
        if not hidden:
            hidden.append(name)
            raise mlflow.exceptions.MlflowException(f"Registered Model with name={name} not found")
        return real_get(client, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_registered_model", not_there_yet)
    assert register("kws_race", f"runs:/{runs[1].run_id}/model", runs[1].run_id, {"stage": "test"}) == 2
    assert hidden == ["kws_race"]
    assert mlflow.MlflowClient().get_model_version_by_alias("kws_race", "challenger").run_id == runs[1].run_id


def test_local_stores_stay_in_the_project_during_a_temporary_dvc_experiment(tmp_path, monkeypatch):
    """`dvc exp run --temp` / `--queue` run in <project>/.dvc/tmp/exps/...; a store there was deleted with the copy."""
    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    (copy / ".dvc").mkdir(parents=True)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(copy)
    settings = RuntimeSettings()
    assert settings.mlflow_tracking_uri == f"sqlite:///{project}/mlflow.db"
    assert settings.mlflow_artifact_root == str(project / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_ARTIFACT_ROOT", str(tmp_path / "elsewhere"))
    assert RuntimeSettings().mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert RuntimeSettings().mlflow_artifact_root == str(tmp_path / "elsewhere")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(project)  # the project itself: relative, as configured
    assert RuntimeSettings().mlflow_tracking_uri == "sqlite:///mlflow.db"


@pytest.mark.slow
def test_a_temporary_dvc_experiment_registers_in_the_projects_store(tmp_path, monkeypatch):
    """In `dvc exp run --temp`'s copy with the default (relative) store, the run, its logged model and the registered
    version all land in the project's mlflow.db: MLflow's SQLite registry looked the logged model up in the copy's
    own default store ("Logged model ... not found")."""
    import mlflow

    from pipeline.tracking import Run
    from pipeline.tracking.registry import register
    from pipeline.tracking.runs import process_uris, tracking_uri

    project = tmp_path / "project"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    (copy / ".dvc").mkdir(parents=True)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_ARTIFACT_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(copy)
    run = Run.start("kws", "tiny_conv", PARAMS, {"profile": "generated voices", "data_sources": "tones (local)"})

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with process_uris(tracking_uri()), mlflow.start_run(run_id=run.run_id):
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
    version = register("kws", info.model_uri, run.run_id, {"stage": "test"})
    assert version == 1
    assert (project / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    assert client.get_model_version_by_alias("kws", "challenger").run_id == run.run_id


def test_counts_become_tags_and_rates_metrics():
    metrics, tags = split_counts({"accuracy": 0.9, "clips": 120, "mode": "sequence", "false_alarms_per_hour": 12.0})
    assert metrics == {"accuracy": 0.9, "false_alarms_per_hour": 12.0}
    assert tags == {"clips": "120", "mode": "sequence"}
    note = note_from({"model": "ds_cnn", "data_sources": "x (synthetic)", "profile": "generated voices"},
                     {"real_dev/accuracy": 0.8923, "streaming/false_alarms_per_hour": 24.0})  # fmt: skip
    assert "real_dev accuracy (real speakers): 89.2 %" in note and "false alarms per hour: 24.0" in note


def test_mcnemar_exact_matches_the_binomial_test():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(0, 0), (1, 0), (5, 1), (12, 30), (40, 55), (200, 260)]:
        expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9), (b, c)


def test_wilson_interval_known_values():
    low, high = wilson_interval(81, 100)  # textbook: 0.722 .. 0.875
    assert (round(low, 3), round(high, 3)) == (0.722, 0.875)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 0) == (0.0, 1.0)


def test_pair_joins_on_clip_and_counts_discordant_pairs():
    new = pd.DataFrame({"clip": ["a", "b", "c", "d", "x"], "correct": [1, 1, 0, 1, 1]})
    old = pd.DataFrame({"clip": ["d", "c", "b", "a", "y"], "correct": [1, 1, 0, 0, 1]})
    paired = pair("real_dev", new, old)
    assert (paired.clips, paired.only_challenger, paired.only_champion) == (4, 2, 1)
    assert paired.challenger_accuracy == 0.75 and paired.champion_accuracy == 0.5
    with pytest.raises(Exception, match="share no clip"):
        pair("real_dev", new.assign(clip=["p", "q", "r", "s", "t"]), old)


def test_refusals_name_every_reason_with_numbers():
    worse = Paired("real_dev", 2201, 1947, 1963, 30, 46)
    reasons = refusals(worse, (60.0, 24.0), require_significant=False)
    assert any("lower accuracy on real_dev: 88.46 % vs 89.19 %" in r for r in reasons)
    assert any("more streaming false alarms: 60.0/h vs 24.0/h" in r for r in reasons)
    small_gain = Paired("real_dev", 2201, 1965, 1963, 20, 18)
    assert refusals(small_gain, (20.0, 24.0), require_significant=False) == []
    assert "gain not significant" in refusals(small_gain, (20.0, 24.0), require_significant=True)[0]
    big_gain = Paired("real_dev", 2201, 2050, 1963, 100, 13)
    assert refusals(big_gain, (None, 24.0), require_significant=True) == []


def _version(client, tmp: Path, run_name: str, correct: np.ndarray, alarms: float) -> int:
    """A run with per-clip results on real_dev and testing and a false-alarm rate, registered as a new version."""
    from pipeline.tracking import Run
    from pipeline.tracking.registry import register

    run = Run.start("kws", "tiny_conv", {**PARAMS, "tag": run_name}, {})
    folder = tmp / run_name
    folder.mkdir()
    for set_name in ("real_dev", "testing"):
        clips = pd.DataFrame({"clip": [f"w/{i:04d}.wav" for i in range(len(correct))], "label": "yes", "predicted": "yes",
                              "correct": correct})  # fmt: skip
        clips.to_csv(folder / f"clips_{set_name}.csv", index=False)
        run.artifact(folder / f"clips_{set_name}.csv", "evaluate")
        run.metrics({f"{'test' if set_name == 'testing' else set_name}/accuracy": float(correct.mean())})
    run.metrics({"streaming/false_alarms_per_hour": alarms})
    (folder / "model").mkdir()
    (folder / "model" / "MLmodel").write_text("flavors: {}\n")
    run.artifact(folder / "model" / "MLmodel", "model")
    run.finish()
    return register(NAME, f"runs:/{run.run_id}/model", run.run_id, {"model": "tiny_conv"})


def _cli(*args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    return CliRunner().invoke(app, [*args, "--name", NAME])


@pytest.mark.slow
def test_promote_gate_on_paired_real_speech_both_directions(store):
    """A clearly better challenger is promoted with its paired test printed; a worse one is refused with numbers."""
    import mlflow

    client = mlflow.MlflowClient()
    rng = np.random.default_rng(0)
    good = (rng.random(400) < 0.92).astype(int)
    bad = good.copy()
    bad[rng.choice(np.flatnonzero(good), 60, replace=False)] = 0  # 60 clips lost, none won
    weak = _version(client, store, "weak", bad, alarms=30.0)
    assert _cli("promote").exit_code == 0  # first champion: nothing to compare with
    strong = _version(client, store, "strong", good, alarms=24.0)

    up = _cli("promote")
    assert up.exit_code == 0, up.output
    assert f"v{strong} vs v{weak} on real_dev, 400 paired clips" in up.stdout and "McNemar exact p = " in up.stdout
    assert "discordant 60 won / 0 lost" in up.stdout and f"version {strong} is now 'champion'" in up.stdout
    tags = client.get_model_version(NAME, str(strong)).tags
    assert tags["champion.by"] and "McNemar" in tags["champion.reason"]
    assert not any(k.startswith("champion.") for k in client.get_model_version(NAME, str(weak)).tags)

    worse = _version(client, store, "worse", bad, alarms=60.0)
    down = _cli("promote")
    assert down.exit_code == 1 and down.stderr.count("\n") == 1 and "Traceback" not in down.output
    assert f"refused: version {worse} vs champion version {strong}" in down.stderr
    assert f"lower accuracy on real_dev: {100 * bad.mean():.2f} % vs {100 * good.mean():.2f} %" in down.stderr
    assert "more streaming false alarms: 60.0/h vs 24.0/h" in down.stderr and "p = " in down.stderr
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == strong

    testing = _cli("promote", "--set", "testing")  # the gate set can be chosen; still worse
    assert testing.exit_code == 1 and "lower accuracy on testing" in testing.stderr
    unknown = _cli("promote", "--set", "other")
    assert unknown.exit_code == 1 and f"--set other: per-clip results of v{worse}: real_dev, testing" in unknown.stderr

    forced = _cli("promote", "--force")
    assert forced.exit_code == 0 and f"version {worse} is now 'champion' (was version {strong})" in forced.stdout
    assert "forced over: lower accuracy" in client.get_model_version(NAME, str(worse)).tags["champion.reason"]

    back = _cli("rollback")
    assert back.exit_code == 0 and f"'champion' is version {strong} again (was version {worse})" in back.stdout
    strong_tags = client.get_model_version(NAME, str(strong)).tags
    assert not any("rolled_back" in k for k in strong_tags) and strong_tags["champion.reason"].startswith("rolled back from")
    assert not any(k.startswith("champion.") for k in client.get_model_version(NAME, str(worse)).tags)
    log = json.loads(client.get_registered_model(NAME).tags["alias_log"])
    assert [e["action"] for e in log if e["alias"] == "champion"] == ["promote", "promote", "promote --force", "rollback"]

    listed = json.loads(_cli("models", "--json").stdout)
    assert {row["version"]: row["metrics"]["real_dev/accuracy"] for row in listed}[strong] == pytest.approx(good.mean())
    assert not any("accuracy" in key for row in listed for key in row["tags"]), "metrics are not copied into tags"


@pytest.mark.slow
def test_require_significant_refuses_a_gain_within_noise(store):
    import mlflow

    client = mlflow.MlflowClient()
    base = np.ones(300, dtype=int)
    base[:30] = 0
    _version(client, store, "base", base, alarms=20.0)
    assert _cli("promote").exit_code == 0
    slightly = base.copy()
    slightly[:2] = 1  # 2 clips better: not beyond noise
    _version(client, store, "slightly", slightly, alarms=20.0)
    refused = _cli("promote", "--require-significant")
    assert refused.exit_code == 1 and "gain not significant: McNemar exact p = 0.5" in refused.stderr
    assert _cli("promote").exit_code == 0, "without --require-significant a gain is enough"


@pytest.mark.slow
def test_empty_store_is_one_line_and_creates_nothing(store):
    for command in ("rollback", "models", "promote"):
        result = _cli(command)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, (command, result.output)
        assert "nothing is registered yet" in result.stderr and "Traceback" not in result.output
    assert not (store / "mlflow.db").exists(), "listing an empty store must not create it"


def test_model_card_has_intervals_confusions_int8_and_licences():
    labels = ["_silence_", "_unknown_", "yes", "no"]
    matrix = np.array([[50, 0, 0, 0], [2, 40, 3, 5], [0, 1, 45, 4], [0, 7, 0, 43]])
    assert confusions(labels, matrix, top=2) == [("no", "_unknown_", 7, 50), ("_unknown_", "no", 5, 50)]
    evaluation = {"testing": {"accuracy": 0.9, "clips": 200, "macro_f1": 0.89},
                  "real_dev": {"accuracy": 0.892, "clips": 2201, "macro_f1": 0.88, "streaming_keywords": 1248,
                               "streaming_matched_percentage": 65.4, "streaming_false_alarms_per_hour": 26.0,
                               "streaming_matched_percentage_at_budget": 48.4, "streaming_threshold_at_budget": 0.92},
                  "streaming": {"duration_ms": 600000.0, "truth_keywords": 210, "mode": "sequence", "matched_percentage": 70.5,
                                "correct_percentage": 68.9, "false_alarms_per_hour": 42.0, "false_positives": 7,
                                "matched_percentage_at_budget": 52.3, "threshold_at_budget": 0.88}}  # fmt: skip
    export = {"tflite": {"int8": {"scheme": "float_frontend", "int8_mac_fraction": 0.987, "float_part": "the spectral frontend"}},
              "testing": {"accuracy": {"float": 0.9, "int8": 0.895}, "top1_agreement_with_keras": {"int8": 0.99}},
              "real_dev": {"accuracy": {"float": 0.892, "int8": 0.8919}, "top1_agreement_with_keras": {"int8": 0.995}}}  # fmt: skip
    sources = [{"kind": "synthetic", "name": "synthetic", "piper": True, "kokoro_blends": 64}]
    card = model_card(name="kws", version=3, run_name="exp-1", run_id="abc", model="embedding_head",
                      preprocess="speech_embedding", labels=labels, sources=sources, evaluation=evaluation,
                      matrices={"real_dev": matrix}, export=export, threshold=0.79, alarm_budget=10)  # fmt: skip
    low, high = wilson_interval(round(0.892 * 2201), 2201)
    assert ("On a 600 s recording of testing clips (210 keywords, mode sequence) at threshold 0.79: 70.5 % of keywords "
            "matched (68.9 % with the right label), 42.0 false alarms per hour (7 false positives); within 10 per hour, "
            "52.3 % at threshold 0.88.") in card
    assert ("The same recording made of `real_dev` clips (1248 keywords, same noise) at threshold 0.79: 65.4 % of keywords "
            "matched, 26.0 false alarms per hour; within 10 per hour, 48.4 % at threshold 0.92.") in card
    assert f"| real_dev | 2201 | 89.2 % | {100 * low:.1f} % – {100 * high:.1f} % |" in card
    assert "42.0 false alarms per hour" in card and "`no` heard as `_unknown_` 7 of 50" in card
    assert "real_dev: 89.2 % → 89.2 %, agreement 99.5 %" in card and "float_frontend" in card
    assert "98.7 % of multiply-accumulates in int8" in card and "In float: the spectral frontend." in card
    for licence in ("speech_embedding", "GPL-3.0", "CC0", "Kokoro-82M (Apache-2.0)", "CC BY 4.0"):
        assert licence in card, licence
    assert "selected figure" in card and "## Intended use" in card
    assert "## Training" not in card  # no recipe given, no empty section
    assert "RecognizeCommands settings" not in card  # none given, none claimed
    from pipeline.config import StreamParams

    recognize = StreamParams(detection_threshold=0.79, average_window_ms=400, rearm="other_command").recognize()
    card = model_card(name="kws", version=3, run_name="exp-1", run_id="abc", model="embedding_head",
                      preprocess="speech_embedding", labels=labels, sources=sources, evaluation=evaluation,
                      matrices={"real_dev": matrix}, export=export, threshold=0.79, recognize=recognize)  # fmt: skip
    assert ("RecognizeCommands settings, recorded in the model's `kws.json` (`kws stream` and `kws listen` use them; a "
            "flag overrides one): threshold 0.79, averaging window 400 ms, minimum count 4, suppression 500 ms, re-arm "
            "`other_command`, window stride 30 ms (windows mode: `.tflite` files).") in card


def test_model_card_training_recipe_names_the_settings_and_the_hard_negatives():
    from pipeline.config import load_params
    from pipeline.tracking.card import model_card, training_lines
    from tests.conftest import REPO

    params = load_params(REPO / "params.yaml")
    mining = params.train.hard_negatives.model_copy(update={"hours": 2, "min_score": 0.7})
    train = params.train.model_copy(update={"steps": [2000, 500], "learning_rate": [0.001, 0.0001], "hard_negatives": mining})
    masks = params.features.spec_augment.model_copy(update={"enabled": True, "time_masks": 2, "time_mask_frames": 4, "frequency_masks": 0})
    frozen = params.features.embedding.finetune.model_copy(update={"convs": 0})
    embedding = params.features.embedding.model_copy(update={"views": 3, "integer_views": True, "finetune": frozen})
    features = params.features.model_copy(update={"spec_augment": masks, "embedding": embedding})
    lines = training_lines(train, features, 603)
    assert "2,500 steps (2,000 at 0.001, 500 at 0.0001)" in lines[0] and "`embedding_head` (" in lines[0]
    assert lines[1].startswith("- Augmentation: 3 views per clip embedded once; time shifts up to 100 ms;")
    assert "2 time masks of up to 4 frames" in lines[1] and "int8 backbone" in lines[1]
    assert lines[-1] == ("- Hard negatives: a second round with 603 windows where the first round's model scored a "
                         "keyword above 0.7 on 2 h of recordings of training clips.")  # fmt: skip
    assert training_lines(train, features, None)[-1] == "- Hard negatives: off (one round)."
    assert not any(line.startswith("- Backbone") for line in lines), "the pretrained backbone: no fine-tuning line"
    tuned = embedding.model_copy(update={"finetune": embedding.finetune.model_copy(update={"convs": 9, "steps": 1000})})
    assert ("- Backbone: its last 9 convolutions fine-tuned on the training clips (a head on the frozen backbone for "
            "1,000 steps, then both for 1,000 steps at 0.0001, noise up to volume 0.2); the rest as pretrained."
            ) in training_lines(train, features.model_copy(update={"embedding": tuned}), None)  # fmt: skip
    card = model_card(name="kws", version=1, run_name="r", run_id="i", model="embedding_head", preprocess="speech_embedding",
                      labels=params.labels, sources=[], evaluation={}, matrices={}, export={}, training=lines)  # fmt: skip
    assert "## Training\n\n- Model `embedding_head`" in card
