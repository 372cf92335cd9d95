"""The evaluate stage on the tiny trained model: files for DVC, extra sets, streaming, MLflow; model behaviour."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.config import parse_params
from pipeline.evaluate.run import run_evaluate
from pipeline.inference import load_keras
from tests.conftest import tiny_params_dict, tone_clip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def evaluated(tiny_trained, tmp_path_factory):
    root, _, _ = tiny_trained
    extra = tmp_path_factory.mktemp("extra")
    for i, (folder, name, slot) in enumerate([("yes", "aa000001_nohash_0.wav", 0), ("no", "aa000002_nohash_0.wav", 1),
                                              ("_unknown_", "cat_aa000003_nohash_0.wav.wav", 2)]):  # fmt: skip
        (extra / folder).mkdir(exist_ok=True)
        sf.write(extra / folder / name, tone_clip("w", 40 + i, 0, slot=slot), 16000, subtype="PCM_16")
    sets = [{"name": "mine", "path": str(extra), "streaming": True},
            {"name": "absent", "path": str(extra / "nope"), "optional": True}]
    quiet = tmp_path_factory.mktemp("speech_free")  # 12 s + 6 s of noise recordings, no speech
    rng = np.random.default_rng(3)
    for name, seconds in (("hum.wav", 12), ("hiss.wav", 6)):
        sf.write(quiet / name, (0.05 * rng.standard_normal(16000 * seconds)).astype(np.float32), 16000, subtype="PCM_16")
    free = [{"name": "gone", "path": str(extra / "nope")}, {"name": "noise", "path": str(quiet)}]
    params = parse_params(tiny_params_dict(root, evaluate={"extra_sets": sets, "streaming": {"recording_seconds": 60},
                                                           "speech_free_sets": free}))  # fmt: skip
    return params, run_evaluate(params)


def test_metrics_json_has_test_extra_and_streaming(evaluated):
    params, metrics = evaluated
    saved = json.loads((params.paths.reports / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert 0.5 <= saved["testing"]["accuracy"] <= 1.0
    assert saved["mine"]["clips"] == 3
    assert "absent" not in saved, "a missing optional set is skipped"
    for key in ("matched_percentage", "correct_percentage", "wrong_percentage", "false_positive_percentage", "false_alarms_per_hour"):
        assert key in saved["streaming"]


def test_confusion_csv_is_dvc_confusion_format(evaluated):
    params, metrics = evaluated
    out = params.paths.reports / "evaluate"
    table = pd.read_csv(out / "confusion_testing.csv")
    assert list(table.columns) == ["actual", "predicted"]
    assert len(table) == metrics["testing"]["clips"]
    assert set(table["actual"]) <= set(params.labels)
    assert (table["actual"] == table["predicted"]).mean() == pytest.approx(metrics["testing"]["accuracy"], abs=1e-6)
    per_class = json.loads((out / "per_class_testing.json").read_text())
    assert np.array(per_class["matrix"]).shape == (4, 4)
    bars = pd.read_csv(out / "per_class_testing.csv")  # DVC's per-class precision/recall bar plots
    assert list(bars.columns) == ["label", "precision", "recall", "f1", "support"]
    assert list(bars["label"]) == params.labels
    assert bars.set_index("label")["recall"].to_dict() == pytest.approx({k: v["recall"] for k, v in per_class["per_class"].items()})
    assert (out / "confusion_testing.png").read_bytes()[:4] == b"\x89PNG"
    truth = pd.read_csv(out / "streaming_truth.csv")
    assert list(truth.columns) == ["label", "time_ms"] and len(truth) >= 20


def test_threshold_sweep_is_written_with_its_false_alarm_curves(evaluated):
    params, metrics = evaluated
    streaming = metrics["streaming"]
    sweep = pd.read_csv(params.paths.reports / "evaluate" / "streaming_sweep.csv")
    assert list(sweep.columns) == ["threshold", "matched_percentage", "correct_percentage", "false_alarms_per_hour",
                                   "non_keyword_false_alarms_per_hour", "speech_free_false_alarms_per_hour",
                                   "validation_matched_percentage", "validation_false_alarms_per_hour"]  # fmt: skip
    assert sweep["threshold"].tolist() == pytest.approx([0.3 + 0.01 * i for i in range(70)])  # 0.30-0.99
    at_default = sweep[np.isclose(sweep["threshold"], params.evaluate.streaming.detection_threshold)].iloc[0]
    assert at_default["matched_percentage"] == pytest.approx(streaming["matched_percentage"], abs=1e-3)
    assert at_default["false_alarms_per_hour"] == pytest.approx(streaming["false_alarms_per_hour"], abs=1e-3)
    assert at_default["speech_free_false_alarms_per_hour"] == pytest.approx(streaming["speech_free_false_alarms_per_hour"])
    assert at_default["non_keyword_false_alarms_per_hour"] == pytest.approx(streaming["non_keyword_false_alarms_per_hour"])
    assert streaming["speech_free_hours"] == pytest.approx(18 / 3600, abs=1e-4)  # the first set present: both files
    within = sweep[sweep["false_alarms_per_hour"] <= params.evaluate.streaming.max_false_alarms_per_hour]
    assert streaming["matched_percentage_at_budget"] == pytest.approx(within["matched_percentage"].max() if len(within) else 0.0)
    assert (params.paths.reports / "evaluate" / "streaming_sweep.png").read_bytes()[:4] == b"\x89PNG"
    # the operating point is chosen on the validation recording's curve and reported on the testing recording
    budget = params.evaluate.streaming.max_false_alarms_per_hour
    on_validation = sweep[sweep["validation_false_alarms_per_hour"] <= budget]
    assert len(on_validation), "the tiny model meets the budget on its validation recording"
    chosen = on_validation.sort_values(["validation_matched_percentage", "threshold"], ascending=False).iloc[0]
    assert streaming["threshold_chosen_on_validation"] == pytest.approx(chosen["threshold"])
    assert streaming["matched_percentage_at_validation_threshold"] == pytest.approx(chosen["matched_percentage"])
    assert streaming["false_alarms_per_hour_at_validation_threshold"] == pytest.approx(chosen["false_alarms_per_hour"])


def test_an_extra_set_with_streaming_gets_its_own_recording_and_sweep(evaluated):
    from pipeline.stream.sweep import SWEEP_COLUMNS, THRESHOLDS

    params, metrics = evaluated
    mine, settings = metrics["mine"], params.evaluate.streaming
    sweep = pd.read_csv(params.paths.reports / "evaluate" / "streaming_sweep_mine.csv")
    assert list(sweep.columns) == SWEEP_COLUMNS and sweep["threshold"].tolist() == pytest.approx(list(THRESHOLDS))
    # a 60 s recording, a word every 2 s, 30 % of them other words: the set's 2 keyword clips fill the rest
    assert 15 <= mine["streaming_keywords"] <= 28
    at_default = sweep[np.isclose(sweep["threshold"], settings.detection_threshold)].iloc[0]
    assert mine["streaming_matched_percentage"] == pytest.approx(at_default["matched_percentage"], abs=1e-4)
    assert mine["streaming_false_alarms_per_hour"] == pytest.approx(at_default["false_alarms_per_hour"], abs=1e-4)
    within = sweep[sweep["false_alarms_per_hour"] <= settings.max_false_alarms_per_hour]
    assert mine["streaming_matched_percentage_at_budget"] == pytest.approx(within["matched_percentage"].max() if len(within) else 0.0)
    assert ("streaming_threshold_at_budget" in mine) == bool(len(within))
    # its own recording: other clips than the testing recording's, so (almost surely) another curve
    testing = pd.read_csv(params.paths.reports / "evaluate" / "streaming_sweep.csv")
    assert not np.allclose(testing["matched_percentage"], sweep["matched_percentage"])


def test_an_extra_set_without_other_words_is_not_streamed(tiny_trained, caplog):
    from pipeline.evaluate.run import extra_set_streaming

    root, _, _ = tiny_trained
    params = parse_params(tiny_params_dict(root, evaluate={"extra_sets": [{"name": "kw", "path": "/x", "streaming": True}]}))
    clips = np.stack([tone_clip("yes", 40, 0, slot=0), tone_clip("no", 41, 0, slot=1)])
    yes, no = params.labels.index("yes"), params.labels.index("no")
    with caplog.at_level("WARNING"):
        assert extra_set_streaming(params, None, 0, clips, np.array([yes, no])) is None
    assert "evaluate.extra_sets kw: not streamed, it holds no _unknown_ clips" in caplog.text
    silence = params.labels.index("_silence_")
    assert extra_set_streaming(params, None, 0, clips, np.array([silence, silence])) is None
    assert "kw: not streamed, it holds no keyword clips" in caplog.text


def test_missing_required_speech_free_set_is_an_error(tiny_trained):
    from pipeline.errors import DataError

    root, _, _ = tiny_trained
    params = parse_params(tiny_params_dict(root, evaluate={"speech_free_sets": [{"name": "x", "path": "/nope", "optional": False}]}))
    with pytest.raises(DataError, match=r"evaluate.speech_free_sets\[x\].path: folder /nope not found"):
        run_evaluate(params)


def test_missing_required_extra_set_is_an_error(tiny_trained):
    from pipeline.errors import DataError

    root, _, _ = tiny_trained
    params = parse_params(tiny_params_dict(root, evaluate={"extra_sets": [{"name": "x", "path": "/nope", "optional": False}]}))
    with pytest.raises(DataError, match="evaluate.extra_sets\\[x\\].path"):
        run_evaluate(params)


def test_metrics_reach_the_training_run(evaluated, mlflow_env):
    import mlflow

    params, metrics = evaluated
    run = mlflow.MlflowClient().get_run((params.paths.model / "run_id.txt").read_text().strip())
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["testing"]["accuracy"])
    assert "mine/accuracy" in run.data.metrics and "streaming/correct_percentage" in run.data.metrics
    assert "test/clips" not in run.data.metrics and run.data.tags["test/clips"] == str(metrics["testing"]["clips"])
    assert run.data.tags["streaming/mode"] == metrics["streaming"]["mode"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"training", "validation", "testing", "mine"} <= set(inputs)
    assert inputs["mine"].tags[0].value == "evaluation" and len(inputs["mine"].dataset.digest) == 32
    client = mlflow.MlflowClient()
    note = run.data.tags["mlflow.note.content"]  # the headline figures the run holds, and no others
    assert "test accuracy" in note and ("real_dev accuracy" in note) == ("real_dev/accuracy" in run.data.metrics)
    clips = pd.read_csv(params.paths.reports / "evaluate" / "clips_mine.csv")
    assert len(clips) == 3 and set(clips.columns) == {"clip", "label", "predicted", "correct"}
    assert clips["correct"].mean() == pytest.approx(metrics["mine"]["accuracy"], abs=1e-6)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/clips_testing.csv", "evaluate/clips_mine.csv", "evaluate/streaming_sweep.csv",
            "evaluate/streaming_sweep.png", "evaluate/streaming_sweep_mine.csv"} <= logged  # fmt: skip
    assert run.data.metrics["mine/streaming_matched_percentage"] == pytest.approx(metrics["mine"]["streaming_matched_percentage"])
    assert "streaming/speech_free_false_alarms_per_hour" in run.data.metrics


def test_behaviour_silence_gain_and_shift(tiny_trained):
    """Noise-only → _silence_; ±6 dB and ±50 ms keep most predictions (tolerance: ≥ 80 % unchanged)."""
    _, params, _ = tiny_trained
    scorer = load_keras(params.paths.model / "model.keras", params.features).scores
    noise = np.load(params.paths.split / "background_testing.npy").astype(np.float32) / 32768
    quiet = np.stack([noise[i * 4000 : i * 4000 + 16000] * 0.05 for i in range(5)])
    assert (scorer(quiet).argmax(1) == params.labels.index("_silence_")).mean() >= 0.8
    clips = np.load(params.paths.split / "testing_audio.npy").astype(np.float32) / 32768
    base = scorer(clips).argmax(1)
    for variant in (clips * 2.0, clips * 0.5, np.roll(clips, 800, axis=1), np.roll(clips, -800, axis=1)):
        assert (scorer(variant).argmax(1) == base).mean() >= 0.8


def test_unheard_word_goes_to_unknown_more_often_than_chance(tiny_trained):
    _, params, _ = tiny_trained
    scorer = load_keras(params.paths.model / "model.keras", params.features).scores
    clips = np.stack([tone_clip("dog", 60 + i, 0, slot=3) for i in range(10)])  # 'dog' is an unknown word, new speakers
    assert (scorer(clips).argmax(1) == params.labels.index("_unknown_")).mean() > 1 / len(params.labels)


def test_the_stage_log_states_the_streaming_operating_points():
    from pipeline.config import StreamParams
    from pipeline.evaluate.run import describe_streaming

    settings = StreamParams(recording_seconds=3600, detection_threshold=0.79, max_false_alarms_per_hour=10)
    stats = {"truth_keywords": 1261, "matched_percentage": 64.155432, "false_alarms_per_hour": 26.0,
             "threshold_chosen_on_validation": 0.79, "matched_percentage_at_budget": 52.3394, "threshold_at_budget": 0.88,
             "non_keyword_false_alarms_per_hour": 354.0, "speech_free_false_alarms_per_hour": 0.0}  # fmt: skip
    assert describe_streaming(stats, settings) == (
        "streaming (1 h testing recording, 1,261 keywords): 64.2 % matched at 26 false alarms/h at threshold 0.79 "
        "(validation chose 0.79); within 10/h: 52.3 % at 0.88; other words only: 354/h; speech-free audio: 0/h")
    none_in_budget = {"truth_keywords": 10, "matched_percentage": 90.0, "false_alarms_per_hour": 52.0,
                      "matched_percentage_at_budget": 0.0}  # fmt: skip
    assert describe_streaming(none_in_budget, settings).endswith("at threshold 0.79; no threshold keeps within 10/h")


def test_the_stage_log_states_an_extra_sets_stream():
    from pipeline.config import StreamParams
    from pipeline.evaluate.run import describe_set_streaming

    settings = StreamParams(recording_seconds=3600, detection_threshold=0.79, max_false_alarms_per_hour=10)
    figures = {"streaming_keywords": 1248, "streaming_matched_percentage": 65.3846, "streaming_false_alarms_per_hour": 26.0,
               "streaming_matched_percentage_at_budget": 48.3974, "streaming_threshold_at_budget": 0.92}  # fmt: skip
    assert describe_set_streaming("real_dev", figures, settings) == (
        "streaming (1 h real_dev recording, 1,248 keywords, the testing recording's noise): 65.4 % matched at "
        "26 false alarms/h at threshold 0.79; within 10/h: 48.4 % at 0.92")
    del figures["streaming_threshold_at_budget"]
    assert describe_set_streaming("real_dev", figures, settings).endswith("; no threshold keeps within 10/h")
