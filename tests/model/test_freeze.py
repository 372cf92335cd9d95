"""The freeze stage on the tiny trained model: export files, parity with Keras, the int8 gate, the registry and the
pyfunc model, gated promotion / forced promotion / rollback through `kws promote|models|rollback`.

`frozen_tiny` runs evaluate + freeze once per session (also used by tests/stages/test_cli.py and test_serve.py).
"""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from pipeline.config import parse_params
from pipeline.errors import DataError, KwsError
from tests.conftest import REAL_DEV, tiny_params_dict

pytestmark = pytest.mark.slow

MODEL_NAME = "kws_tiny"
EXPORT_FILES = ["saved_model", "model_float.tflite", "model_int8.tflite", "labels.txt", "export.json", "registered.json"]
_FROZEN: dict[str, SimpleNamespace] = {}


def _stub_latency(*args, **kwargs) -> dict:
    """Stands in for the fresh-process SavedModel latency run (~15 s of TF start-up; tested in test_export.py)."""
    return {"median_ms": 0.0, "p90_ms": 0.0, "repeats": 0, "stubbed": True}


def frozen_tiny(tiny_trained, tmp_path_factory) -> SimpleNamespace:
    """Evaluate + freeze the tiny trained model once per session, into a private export/reports folder.

    Returns params, the params.yaml written for the CLI (`--params`), run_freeze's result and the work folder.
    """
    root, _, _ = tiny_trained
    if str(root) not in _FROZEN:
        from pipeline.evaluate.run import run_evaluate
        from pipeline.export.freeze import run_freeze

        work = tmp_path_factory.mktemp("frozen")
        raw = tiny_params_dict(
            root,
            paths={"reports": str(work / "reports"), "export": str(work / "export")},
            freeze={"registered_model_name": MODEL_NAME, "latency_repeats": 3, "representative_clips": 50},
            evaluate={"streaming": {"recording_seconds": 30},
                      "extra_sets": [{"name": "real_dev", "path": str(REAL_DEV), "optional": True}]},
        )  # fmt: skip
        params_file = work / "params.yaml"
        params_file.write_text(yaml.safe_dump(raw))
        params = parse_params(raw)
        run_evaluate(params)  # freeze reads reports/evaluation.json and model/run_id.txt
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("pipeline.export.serving.saved_model_latency_ms", _stub_latency)
            result = run_freeze(params)
        _FROZEN[str(root)] = SimpleNamespace(params=params, params_file=params_file, result=result, work=work, raw=raw)
    return _FROZEN[str(root)]


@pytest.fixture(scope="module")
def frozen(tiny_trained, mlflow_env, tmp_path_factory):
    return frozen_tiny(tiny_trained, tmp_path_factory)


def _testing(params) -> tuple[np.ndarray, np.ndarray]:
    audio = np.load(params.paths.split / "testing_audio.npy").astype(np.float32) / 32768.0
    return audio, np.load(params.paths.split / "testing_labels.npy").astype(np.int64)


def _wav_bytes(clip: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, clip, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_export_writes_every_file(frozen):
    out = frozen.params.paths.export
    names = {p.name for p in out.iterdir()}
    assert set(EXPORT_FILES) <= names, names
    assert not [n for n in names if n.startswith(".") or "tmp" in n], f"temporary files left behind: {names}"
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "labels.txt").read_text().split() == frozen.params.labels
    report = json.loads((out / "export.json").read_text())
    assert report["labels"] == frozen.params.labels and report["parameters"] > 0
    assert report["tflite"]["int8"]["scheme"] == "float_frontend"
    assert report["bytes"]["model_int8.tflite"] < report["bytes"]["model_float.tflite"]
    assert set(report["latency_ms_1_thread"]) == {"keras", "saved_model", "tflite_float", "tflite_int8"}
    from pipeline.inference import read_saved_model_card, read_tflite_card

    recorded = frozen.params.evaluate.streaming.recognize()  # the settings evaluate measured the stream at
    assert read_saved_model_card(out / "saved_model")["recognize"] == recorded
    assert all(read_tflite_card(out / f"model_{mode}.tflite")["recognize"] == recorded for mode in ("float", "int8"))
    assert "RecognizeCommands settings, recorded in the model's `kws.json`" in (out / "model_card.md").read_text()
    if REAL_DEV.is_dir():  # every export scored on the real clips too: quantization judged on people
        real = report["real_dev"]
        assert real["clips"] == 2201 and set(real["accuracy"]) == {"keras", "saved_model", "float", "int8"}
        assert real["top1_agreement_with_keras"]["float"] > 0.99
        assert json.loads((out / "metrics.json").read_text())["real_dev_accuracy"] == real["accuracy"]
    registered = json.loads((out / "registered.json").read_text())
    assert registered == json.loads(json.dumps(frozen.result["registered"]))
    assert registered["name"] == MODEL_NAME and registered["alias"] == "challenger"
    assert registered["model_uri"].startswith("models:/m-")


def test_int8_calibration_keeps_the_draw_most_accurate_on_validation(frozen):
    """freeze.calibration_draws seeded calibration sets are converted; the int8 file kept is the one that scores best
    on the validation set (never the testing set the gate reads), and export.json says which draw it was."""
    from pipeline.export.tflite import TfliteModel

    params, out = frozen.params, frozen.params.paths.export
    record = json.loads((out / "export.json").read_text())["tflite"]["int8"]["calibration"]
    scores = record["validation_accuracy"]
    assert record["draws"] == params.freeze.calibration_draws == 3 and len(scores) == 3
    assert record["chosen"] == scores.index(max(scores)) and record["clips"] == 50
    audio = np.load(params.paths.split / "validation_audio.npy").astype(np.float32) / 32768.0
    labels = np.load(params.paths.split / "validation_labels.npy")
    kept = float((TfliteModel(out / "model_int8.tflite").predict(audio).argmax(1) == labels).mean())
    assert kept == pytest.approx(scores[record["chosen"]], abs=1e-6)


def test_int8_calibration_choice_uses_validation_only(tmp_path, monkeypatch):
    """Three draws whose int8 files get 2, 4 and 3 of 4 validation clips right: the second is kept (file, clips and
    description), no temporary file is left, and one draw converts once without scoring."""
    from pipeline.export import freeze

    labels = np.arange(4)
    right = {0: 2, 1: 4, 2: 3}
    sets = []
    monkeypatch.setattr(freeze, "_clips", lambda params, name: sets.append(name) or (np.zeros((4, 8), np.int16), labels))
    monkeypatch.setattr("pipeline.export.integer.calibration_audio", lambda params, draw=0: np.full((2, 8), draw, np.float32))

    def convert(saved, out, mode, clips, scheme="float_frontend"):
        Path(out).write_text(str(int(clips[0, 0])))
        return {"mode": mode, "path": str(out), "draw": int(clips[0, 0])}

    class Scored:
        def __init__(self, path):
            self.draw = int(Path(path).read_text())

        def scores(self, audio):
            predicted = np.where(labels < right[self.draw], labels, (labels + 1) % 4)
            return np.eye(4)[predicted]

    monkeypatch.setattr("pipeline.export.tflite.convert", convert)
    monkeypatch.setattr("pipeline.inference.load_tflite", Scored)
    params, out = SimpleNamespace(freeze=SimpleNamespace(calibration_draws=3)), tmp_path / "model_int8.tflite"
    info, clips = freeze.calibrated_int8(params, tmp_path / "saved_model", out)
    assert out.read_text() == "1" and info["draw"] == 1 and info["path"] == str(out) and clips[0, 0] == 1
    assert info["calibration"] == {"draws": 3, "chosen": 1, "clips": 2, "validation_accuracy": [0.5, 1.0, 0.75]}
    assert sets == ["validation"] and [p.name for p in tmp_path.iterdir()] == ["model_int8.tflite"]
    params.freeze.calibration_draws = 1
    info, clips = freeze.calibrated_int8(params, tmp_path / "saved_model", out)
    assert out.read_text() == "0" and info["calibration"] == {"draws": 1, "chosen": 0, "clips": 2}


def test_exported_models_agree_with_keras(frozen):
    """SavedModel, TFLite float and int8 load and agree with Keras; export.json's agreement values recomputed."""
    from pipeline.export.tflite import TfliteModel, agreement
    from pipeline.inference import load_keras, load_saved_model

    params, out = frozen.params, frozen.params.paths.export
    report = json.loads((out / "export.json").read_text())["testing"]
    audio, labels = _testing(params)
    keras_scores = load_keras(params.paths.model / "model.keras", params.features).scores(audio)
    saved = load_saved_model(out / "saved_model").scores(audio)
    float_scores = TfliteModel(out / "model_float.tflite").predict(audio)
    int8_scores = TfliteModel(out / "model_int8.tflite").predict(audio)
    np.testing.assert_allclose(saved, keras_scores, atol=1e-4)
    np.testing.assert_allclose(float_scores, keras_scores, atol=1e-3)
    assert agreement(keras_scores, saved) == pytest.approx(report["top1_agreement_with_keras"]["saved_model"]) == 1.0
    assert agreement(keras_scores, float_scores) == pytest.approx(report["top1_agreement_with_keras"]["float"]) == 1.0
    assert agreement(keras_scores, int8_scores) == pytest.approx(report["top1_agreement_with_keras"]["int8"])
    assert float((int8_scores.argmax(1) == labels).mean()) == pytest.approx(report["accuracy"]["int8"])
    assert report["clips"] == len(labels)


@pytest.mark.parametrize("kind", ["saved_model", "tflite_float", "tflite_int8", "pyfunc"])
def test_every_predictor_kind_scores_like_keras(frozen, mlflow_env, kind):
    """One parity test over every form a model is scored in, on the same testing clips, against the Keras classifier
    behind the frontend: the same top label (int8: >= 90 % of clips), scores within 1e-4 (float) / 1e-3 (TFLite)."""
    from pipeline.inference import load_keras, load_model

    params, out = frozen.params, frozen.params.paths.export
    audio, _ = _testing(params)
    keras_scores = load_keras(params.paths.model / "model.keras", params.features).scores(audio)
    if kind == "pyfunc":
        import mlflow

        model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@challenger")
        result = model.predict(pd.DataFrame({"audio": [_wav_bytes(clip) for clip in audio]}))
        scores = np.stack(result["scores"]).astype(np.float32)
    else:
        spec = {"saved_model": out, "tflite_float": out / "model_float.tflite", "tflite_int8": out / "model_int8.tflite"}[kind]
        predictor = load_model(spec)
        assert predictor.labels == params.labels and predictor.sample_rate == 16000 and predictor.clip_samples == 16000
        scores = predictor.scores(audio)
    assert scores.shape == keras_scores.shape
    same = float((scores.argmax(1) == keras_scores.argmax(1)).mean())
    if kind == "tflite_int8":
        assert same >= 0.9, same
    else:
        assert same == 1.0
        assert np.abs(scores - keras_scores).max() < (1e-3 if kind == "tflite_float" else 1e-4)


def test_registered_version_tags_and_pyfunc(frozen, mlflow_env, monkeypatch, tmp_path):
    import mlflow

    # freeze logged the pyfunc model through MLflow's process-wide URIs; it must put them back, or every later
    # MlflowClient in this process writes to this store whatever MLFLOW_TRACKING_URI says
    other = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", other)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (other, other)
    monkeypatch.undo()

    from pipeline.inference import load_saved_model
    from pipeline.tracking.pyfunc import OUTPUT_COLUMNS, REQUIREMENTS

    params = frozen.params
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, "challenger")
    evaluation = json.loads((params.paths.reports / "evaluation.json").read_text())
    run_id = (params.paths.model / "run_id.txt").read_text().strip()
    assert version.run_id == run_id
    assert version.tags["model"] == "tiny_conv" and not any("accuracy" in key for key in version.tags), version.tags
    logged = client.get_logged_model(frozen.result["registered"]["model_uri"].removeprefix("models:/"))
    assert {"name": MODEL_NAME, "version": version.version} in json.loads(logged.tags["mlflow.modelVersions"])
    assert logged.source_run_id == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", "logging the model must not change the training run's status"
    assert run.data.metrics["test/int8_accuracy"] == pytest.approx(frozen.result["testing"]["accuracy"]["int8"])
    assert run.data.metrics["test/accuracy"] == pytest.approx(evaluation["testing"]["accuracy"])
    assert run.data.tags["registered_version"] == f"{MODEL_NAME}/{version.version}"
    assert "int8 TFLite test accuracy" in run.data.tags["mlflow.note.content"]
    # the evaluation metrics of the logged model point at their dataset input (name and DVC/content digest)
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    linked = {(m.key, m.dataset_name, m.dataset_digest) for m in logged.metrics}
    assert ("test/accuracy", "testing", digests["testing"]) in linked

    # the model card: in models/export/, beside the model's files, and (cut to size) as the version's description
    card = (params.paths.export / "model_card.md").read_text()
    assert f"# {MODEL_NAME} version {version.version}" in card and "| testing | " in card and "## Licences" in card
    assert version.description.startswith(f"# {MODEL_NAME} version {version.version}")
    assert "model_card.md" in {a.path for a in client.list_logged_model_artifacts(logged.model_id)}

    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}@challenger")
    assert info.signature.inputs.to_dict() == [{"type": "binary", "name": "audio", "required": True}]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == OUTPUT_COLUMNS
    assert info.saved_input_example_info["type"] == "dataframe"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@challenger"))
    requirements = (local / "requirements.txt").read_text().split()
    pinned = {line.split("==")[0]: line for line in requirements}
    assert all("==" in line for line in requirements), requirements
    assert set(REQUIREMENTS) <= set(pinned) and "mlflow" in pinned

    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@challenger")
    audio, _ = _testing(params)
    wavs = [_wav_bytes(clip) for clip in audio[:4]]  # int16 clips: the wav round trip is exact
    result = model.predict(pd.DataFrame({"audio": [*wavs, base64.b64encode(wavs[0]).decode()]}))
    assert list(result.columns) == ["label", "score", "scores", "labels", "seconds", "detections", "notes"]
    assert all(row == params.labels for row in result["labels"]) and list(result["seconds"]) == [1.0] * 5
    saved = load_saved_model(params.paths.export / "saved_model").scores(audio[:4])
    assert list(result["label"][:4]) == [params.labels[i] for i in saved.argmax(1)]
    np.testing.assert_allclose(np.stack(result["scores"][:4]), saved, atol=1e-5)
    assert result["label"][4] == result["label"][0], "base64 text is decoded like bytes"
    assert all(len(s) == len(params.labels) and abs(sum(s) - 1) < 1e-4 for s in result["scores"])


def test_rerun_after_a_kill_that_followed_registration_reuses_the_version(frozen, mlflow_env):
    """Freeze killed between registering and writing registered.json: the rerun must not add a second version."""
    import mlflow

    from pipeline.export.freeze import register_model

    params, first = frozen.params, frozen.result["registered"]
    client = mlflow.MlflowClient()
    run_id = first["run_id"]
    before = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])
    again = register_model(params, frozen.result)  # what the rerun does after re-exporting
    assert again["version"] == first["version"] and again["model_uri"] == first["model_uri"]
    versions = client.search_model_versions(f"name = '{MODEL_NAME}' and run_id = '{run_id}'")
    assert [int(v.version) for v in versions] == [first["version"]], "one run, one registered version"
    assert int(client.get_model_version_by_alias(MODEL_NAME, "challenger").version) == first["version"]
    after = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])
    assert len(after) == len(before), "no second pyfunc model logged to the run"


def test_int8_gate_blocks_registration(frozen, tmp_path, monkeypatch, mlflow_env):
    """A broken int8 model: export.json is written, run_freeze fails, nothing is registered, no stale registered.json."""
    import mlflow

    from pipeline.export import freeze
    from pipeline.export.tflite import TfliteModel, int8_gate

    # really shuffled int8 scores fail the gate
    params = frozen.params
    audio, labels = _testing(params)
    scores = TfliteModel(params.paths.export / "model_int8.tflite").predict(audio)
    shuffled = np.random.default_rng(0).permuted(scores, axis=1)
    broken = float((shuffled.argmax(1) == labels).mean())
    assert broken < frozen.result["testing"]["accuracy"]["float"] - 0.1
    with pytest.raises(KwsError, match="int8 model loses"):
        int8_gate(frozen.result["testing"]["accuracy"]["float"], broken, params.freeze.max_int8_drop)

    # run_freeze with that accuracy: the report is kept for a human to read, the registry is untouched
    report = copy.deepcopy({k: v for k, v in frozen.result.items() if k != "registered"})
    report["testing"]["accuracy"]["int8"] = broken
    monkeypatch.setattr(freeze, "export_models", lambda _params: report)
    raw = copy.deepcopy(frozen.raw)
    raw["paths"]["export"] = str(tmp_path / "export")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "registered.json").write_text("{}")  # left by an earlier successful freeze
    before = len(mlflow.MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'"))
    with pytest.raises(KwsError, match="above freeze.max_int8_drop"):
        freeze.run_freeze(parse_params(raw))
    written = json.loads((tmp_path / "export" / "export.json").read_text())
    assert written["testing"]["accuracy"]["int8"] == broken
    assert not (tmp_path / "export" / "registered.json").exists()
    assert len(mlflow.MlflowClient().search_model_versions(f"name = '{MODEL_NAME}'")) == before


def test_freeze_needs_evaluation_first(frozen, tmp_path):
    from pipeline.export.freeze import run_freeze

    raw = copy.deepcopy(frozen.raw)
    raw["paths"]["reports"] = str(tmp_path / "reports")
    raw["paths"]["export"] = str(tmp_path / "export")
    with pytest.raises(DataError, match="evaluation.json: not found; run the evaluate stage"):
        run_freeze(parse_params(raw))
    assert not (tmp_path / "export").exists(), "checked before any export work"


def test_freeze_without_the_train_run_in_the_store_fails_before_export(frozen, tmp_path, monkeypatch):
    """Fault: a clone whose train outputs came from the DVC cache has no mlflow.db; freeze exported for minutes, then
    failed with 'no tracking store ... (run the freeze stage ...)', from inside the freeze stage."""
    from pipeline.export import freeze
    from pipeline.tracking.runs import TrackingError

    monkeypatch.setattr(freeze, "export_models", lambda _params: pytest.fail("exported before checking the run"))
    raw = copy.deepcopy(frozen.raw)
    raw["paths"]["export"] = str(tmp_path / "export")
    store = tmp_path / "mlflow.db"  # a fresh clone: the folder is there, the store is not
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    run_id = (Path(raw["paths"]["model"]) / "run_id.txt").read_text().strip()
    with pytest.raises(TrackingError, match=rf"^MLflow run {run_id} \(the train stage's run_id.txt\) is not in the "
                                            r"tracking store .*retrain: dvc repro -f -s train, then dvc repro$"):
        freeze.run_freeze(parse_params(raw))
    assert not store.exists(), "looking for the run created an empty store"


def _cli(*args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    return CliRunner().invoke(app, list(args))


def test_promote_and_rollback_the_frozen_versions(frozen, mlflow_env):
    """Two versions of one run (same per-clip results): the second may replace the first (not worse), the pair is
    reported; rollback restores and leaves no stale alias tags (the gate itself: tests/unit/test_tracking.py)."""
    import mlflow

    from pipeline.tracking.registry import register

    client = mlflow.MlflowClient()
    p = ["--params", str(frozen.params_file)]
    first = int(client.get_model_version_by_alias(MODEL_NAME, "challenger").version)
    done = _cli("promote", *p)
    assert done.exit_code == 0, done.output
    assert f"version {first} is now 'champion'" in done.stdout
    assert "already holds" in _cli("promote", *p).stdout

    registered = frozen.result["registered"]
    second = register(MODEL_NAME, registered["model_uri"], registered["run_id"], {"model": "tiny_conv"})
    again = _cli("promote", *p)
    assert again.exit_code == 0, again.output
    gate = "real_dev" if REAL_DEV.is_dir() else "testing"
    assert f"v{second} vs v{first} on {gate}, " in again.stdout and "discordant 0 won / 0 lost, McNemar exact p = 1" in again.stdout
    assert _cli("promote", "--require-significant", "--version", str(first), *p).exit_code == 1

    back = _cli("rollback", *p)
    assert back.exit_code == 0 and f"'champion' is version {first} again (was version {second})" in back.stdout
    assert not any(k.startswith("champion.") for k in client.get_model_version(MODEL_NAME, str(second)).tags)
    assert not any("rolled_back" in k for k in client.get_model_version(MODEL_NAME, str(first)).tags)
    again = _cli("rollback", *p)
    assert again.exit_code == 1 and "no earlier holder of 'champion'" in again.stderr
    missing = _cli("promote", "--version", "99", *p)
    assert missing.exit_code == 1 and f"{MODEL_NAME} has no version 99" in missing.stderr
    assert "Traceback" not in missing.output
    assert _cli("promote", "--version", "1", "--alias", "x", *p).exit_code == 1
