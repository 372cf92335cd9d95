"""The `kws` command line on the tiny trained and frozen model: label-wav, stream, inspect, data info, spectrogram,
and one-line errors for a user's mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import DataError
from tests.conftest import tone_clip
from tests.model.test_freeze import MODEL_NAME, frozen_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frozen(tiny_trained, mlflow_env, tmp_path_factory):
    return frozen_tiny(tiny_trained, tmp_path_factory)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    """A 'yes' (slot 0 of the tiny corpus; a training speaker's pitch, an unseen take), a converted one, a broken file."""
    folder = tmp_path_factory.mktemp("wavs")
    yes = tone_clip("yes", 10, 7, slot=0)
    sf.write(folder / "yes.wav", yes, 16000, subtype="PCM_16")
    import soxr

    half = soxr.resample(yes, 16000, 8000)[2000:6000]  # 0.5 s at 8 kHz, stereo: every conversion at once
    sf.write(folder / "odd.wav", np.stack([half, half], axis=1), 8000, subtype="PCM_16")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    return folder


def kws(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _p(frozen) -> list[str]:
    return ["--params", str(frozen.params_file)]


def _one_line_error(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_help_lists_commands():
    result = kws("--help")
    assert result.exit_code == 0
    for command in ("label-wav", "stream", "listen", "inspect", "models", "promote", "rollback", "spectrogram", "data"):
        assert command in result.stdout


def test_label_wav_names_the_word(frozen, wavs, monkeypatch):
    monkeypatch.chdir(wavs)  # a short name: the table row stays on one line
    human = kws("label-wav", "yes.wav", *_p(frozen))
    assert human.exit_code == 0, human.output
    row = next(line for line in human.stdout.splitlines() if "yes.wav" in line)
    assert row.split("│")[2].split()[0] == "yes", human.stdout  # the #1 column of the file's row
    result = kws("label-wav", wavs / "yes.wav", "--json", "--top-k", "2", *_p(frozen))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["file"].endswith("yes.wav") and rows[0]["notes"] == []
    top = rows[0]["top"]
    assert [t["label"] for t in top][0] == "yes" and len(top) == 2 and top[0]["score"] >= top[1]["score"]
    assert result.stderr == ""


@pytest.mark.parametrize("model", ["export/model_int8.tflite", "export/model_float.tflite", "export", "keras", "registry"])
def test_label_wav_any_model_form(frozen, wavs, model):
    spec = {"keras": frozen.params.paths.model / "model.keras", "registry": f"models:/{MODEL_NAME}@challenger"}.get(
        model, frozen.work / model
    )
    result = kws("label-wav", wavs / "yes.wav", "--json", "--model", spec, *_p(frozen))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["top"][0]["label"] == "yes"


def test_label_wav_converts_odd_audio_with_warnings(frozen, wavs):
    result = kws("label-wav", wavs / "odd.wav", "--json", *_p(frozen))
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert row["top"][0]["label"] in frozen.params.labels
    for words in ("mixed 2 channels", "resampled 8000 Hz to 16000 Hz", "padded 8000 samples to 16000"):
        assert any(words in note for note in row["notes"])
        assert f"warning: {wavs / 'odd.wav'}: {words}" in result.stderr


def test_label_wav_unreadable_file_fails_alone(frozen, wavs):
    result = kws("label-wav", wavs / "broken.wav", wavs / "yes.wav", wavs / "nope.wav", "--json", *_p(frozen))
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()  # a missing file is named before the model loads, then unreadable ones
    assert errors == [f"error: {wavs / 'nope.wav'}: no such file",
                      f"error: {wavs / 'broken.wav'}: cannot read audio; the file is not wav/flac (Format not recognised)"]  # fmt: skip
    rows = json.loads(result.stdout)
    assert [("error" in r) for r in rows] == [True, False, True]
    assert rows[1]["top"][0]["label"] == "yes"
    human = kws("label-wav", wavs / "broken.wav", wavs / "yes.wav", *_p(frozen))
    assert human.exit_code == 1 and "Traceback" not in human.output and "yes" in human.stdout


def test_inspect_json_describes_the_model(frozen):
    result = kws("inspect", "--json", *_p(frozen))
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["kind"] == "saved_model"
    assert facts["inputs"] == [{"name": "audio", "shape": [None, 16000], "dtype": "float32"}]
    assert facts["outputs"] == [{"name": "scores", "shape": [None, 4], "dtype": "float32"}]
    assert facts["labels"] == frozen.params.labels
    assert facts["parameters"] == frozen.result["parameters"] and facts["parameters_source"] == "export.json"
    assert facts["bytes"] > 0 and facts["sample_rate"] == 16000

    int8 = json.loads(kws("inspect", "--json", "--model", frozen.work / "export/model_int8.tflite", *_p(frozen)).stdout)
    assert int8["kind"] == "tflite" and int8["quantization"]["mode"] == "int8"
    assert int8["quantization"]["scheme"] == "float_frontend" and int8["quantization"]["int8_mac_fraction"] > 0
    assert int8["quantization"]["int8_dynamic_mac_fraction"] == 0  # calibrated ranges: no per-invoke quantization
    assert any(b["op"] == "QUANTIZE" and b["scale"] > 0 for b in int8["quantization"]["boundaries"])
    assert int8["inputs"][0]["dtype"] == "float32" and int8["bytes"] == frozen.result["bytes"]["model_int8.tflite"]

    registry = json.loads(kws("inspect", "--json", "--model", f"models:/{MODEL_NAME}@challenger", *_p(frozen)).stdout)
    assert registry["registry"]["name"] == MODEL_NAME and "challenger" in registry["registry"]["aliases"]
    assert registry["inputs"][0]["name"] == "audio"
    recorded = frozen.params.evaluate.streaming.recognize()  # a registered model carries its operating point too
    assert facts["recognize"] == registry["recognize"] == int8["recognize"] == recorded
    human = kws("inspect", *_p(frozen))
    assert human.exit_code == 0 and "scores" in human.stdout and "_silence_" in human.stdout
    assert f"detection_threshold {recorded['detection_threshold']}" in human.stdout


def test_stream_reports_detections(frozen, tmp_path):
    from pipeline.stream.recording import make_recording

    params = frozen.params
    split = params.paths.split
    settings = params.evaluate.streaming.model_copy(update={"recording_seconds": 20})
    audio, truth = make_recording(np.load(split / "testing_audio.npy"), np.load(split / "testing_labels.npy"), params.labels,
                                  np.load(split / "background_testing.npy"), settings, 16000, seed=5)  # fmt: skip
    sf.write(tmp_path / "rec.wav", audio, 16000, subtype="PCM_16")
    result = kws("stream", tmp_path / "rec.wav", "--json", *_p(frozen))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["seconds"] == pytest.approx(20.0) and report["settings"]["clip_stride_ms"] == 30
    found = report["detections"]
    assert found and all(d["label"] in params.data.keywords and 0 < d["time_s"] <= 20 for d in found)
    words = truth[truth["label"].isin(params.data.keywords)]
    hits = sum(any(d["label"] == w.label and abs(d["time_s"] * 1000 - w.time_ms) <= 1500 for d in found)
               for w in words.itertuples())  # fmt: skip
    assert hits >= len(words) / 2, (found, truth)
    human = kws("stream", tmp_path / "rec.wav", *_p(frozen))
    assert human.exit_code == 0 and f"{len(found)} detection(s)" in human.stdout


def test_label_wav_refuses_empty_audio(frozen, tmp_path):
    """Fault: a 0-frame wav was labelled `_silence_ 0.934` with exit 0."""
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    result = kws("label-wav", tmp_path / "empty.wav", "--json", *_p(frozen))
    assert result.exit_code == 1
    assert _one_line_error(result) == f"error: {tmp_path / 'empty.wav'}: the audio holds no samples (0 frames)"
    assert json.loads(result.stdout) == [{"file": str(tmp_path / "empty.wav"),
                                          "error": f"{tmp_path / 'empty.wav'}: the audio holds no samples (0 frames)"}]  # fmt: skip


def test_label_wav_on_a_long_file_points_to_stream(frozen, tmp_path):
    """Fault: a 3 s capture was cut to its first second with a bare warning. The warning says so and names `kws stream`."""
    audio = np.concatenate([np.zeros(32000, np.float32), tone_clip("yes", 10, 7, slot=0)])
    sf.write(tmp_path / "late.wav", audio, 16000, subtype="PCM_16")
    result = kws("label-wav", tmp_path / "late.wav", "--json", *_p(frozen))
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"warning: {tmp_path / 'late.wav'}: trimmed 48000 samples (3.00 s) to 16000; only the "
                                     f"first clip is scored: `kws stream {tmp_path / 'late.wav'}` scores the whole recording")  # fmt: skip
    assert json.loads(result.stdout)[0]["seconds"] == 3.0


_NO_TF = """
import sys
from typer.testing import CliRunner
from pipeline.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
sys.stdout.write(result.stdout)
sys.stderr.write(result.stderr)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras", "mlflow"})
print(f"HEAVY={heavy}", file=sys.stderr)
sys.exit(result.exit_code)
"""


@pytest.mark.parametrize("command", ["label-wav", "stream", "inspect"])
def test_tflite_commands_never_import_tensorflow(frozen, wavs, tmp_path, command):
    """Fault: every CLI call imported TensorFlow (~9 s of CPU) even for a .tflite. label-wav / stream / inspect on
    a .tflite import ai_edge_litert and numpy, not tensorflow, keras or mlflow (checked in a fresh process)."""
    import subprocess
    import sys

    model = frozen.work / "export" / "model_float.tflite"
    args = {"label-wav": ["label-wav", wavs / "yes.wav", "--json"], "stream": ["stream", wavs / "yes.wav", "--json"],
            "inspect": ["inspect", "--json"]}[command]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _NO_TF, *map(str, args), "--model", str(model), *_p(frozen)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "HEAVY=[]", done.stderr
    output = json.loads(done.stdout)
    if command == "label-wav":
        assert output[0]["top"][0]["label"] == "yes"
    elif command == "stream":
        assert output["labels"] == frozen.params.labels and output["mode"] == "windows"
    else:
        assert output["kind"] == "tflite" and output["labels"] == frozen.params.labels and output["model_card"] is True


def test_stream_options_override_the_settings_and_long_files_show_progress(frozen, tmp_path):
    from pipeline.stream.recording import make_recording

    params = frozen.params
    split = params.paths.split
    settings = params.evaluate.streaming.model_copy(update={"recording_seconds": 70})
    audio, _ = make_recording(np.load(split / "testing_audio.npy"), np.load(split / "testing_labels.npy"), params.labels,
                              np.load(split / "background_testing.npy"), settings, 16000, seed=6)  # fmt: skip
    sf.write(tmp_path / "long.wav", audio, 16000, subtype="PCM_16")
    model = frozen.work / "export" / "model_float.tflite"
    plain = kws("stream", tmp_path / "long.wav", "--json", "--model", model, *_p(frozen))
    assert plain.exit_code == 0, plain.output
    lines = plain.stderr.strip().splitlines()  # about one line per 10 %, ending at 100 %
    percents = [int(line.removeprefix("streaming: ").removesuffix("% of 70.0 s")) for line in lines]
    assert len(percents) >= 5 and percents == sorted(set(percents)) and percents[-1] == 100, lines
    assert json.loads(plain.stdout)["detections"], "the tiny model hears its words at the shipped settings"
    strict = kws("stream", tmp_path / "long.wav", "--json", "--model", model, "--threshold", "1", "--average-window-ms", "300",
                 "--suppression-ms", "900", "--minimum-count", "2", "--rearm", "other_command", *_p(frozen))  # fmt: skip
    report = json.loads(strict.stdout)
    assert report["settings"] == {"clip_stride_ms": 30.0, "average_window_ms": 300.0, "detection_threshold": 1.0,
                                  "suppression_ms": 900.0, "minimum_count": 2, "rearm": "other_command"}  # fmt: skip
    assert report["detections"] == []  # a score must be strictly above the threshold: never above 1
    bad = kws("stream", tmp_path / "long.wav", "--threshold", "2", "--model", model, *_p(frozen))
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    bad = kws("stream", tmp_path / "long.wav", "--rearm", "tf", "--model", model, *_p(frozen))
    assert bad.exit_code == 2 and "--rearm" in bad.output and "Traceback" not in bad.output  # click's usage error


def test_stream_uses_the_settings_the_model_was_evaluated_at(frozen, wavs, tmp_path):
    """Fault: a model shared without its project (no params.yaml beside the user) was streamed at the library's
    default threshold 0.7, not the one its streaming figures were measured at, and in a project whose params.yaml
    had moved on, at the new values with no word said. The freeze stage records RecognizeCommands' settings in the
    model card; `kws stream` uses them, says where they came from, warns when params.yaml differs, and a flag
    still overrides."""
    import shutil

    recorded = frozen.params.evaluate.streaming.recognize()
    model = frozen.work / "export" / "model_float.tflite"
    shutil.copyfile(model, tmp_path / "shared.tflite")  # a lone copy: no export.json, no labels.txt, no params.yaml
    alone = kws("stream", wavs / "yes.wav", "--json", "--model", tmp_path / "shared.tflite", "--params", tmp_path / "none.yaml")
    assert alone.exit_code == 0, alone.output
    report = json.loads(alone.stdout)
    assert report["settings"] == recorded and report["settings_from"] == "model card"

    shared = tmp_path / "shared_model"  # a SavedModel evaluated at other settings than the library's defaults
    shutil.copytree(frozen.work / "export" / "saved_model", shared)
    card = json.loads((shared / "assets" / "kws.json").read_text())
    assert card["recognize"] == recorded
    card["recognize"] |= {"detection_threshold": 0.55, "suppression_ms": 750.0}
    (shared / "assets" / "kws.json").write_text(json.dumps(card))
    own = json.loads(kws("stream", wavs / "yes.wav", "--json", "--model", shared, "--params", tmp_path / "none.yaml").stdout)
    assert own["settings"] == card["recognize"] and own["settings_from"] == "model card"

    moved = tmp_path / "params.yaml"
    streaming = {**frozen.raw["evaluate"]["streaming"], "detection_threshold": 0.42, "average_window_ms": 640.0}
    moved.write_text(yaml.safe_dump({**frozen.raw, "evaluate": {**frozen.raw["evaluate"], "streaming": streaming}}))
    warned = kws("stream", wavs / "yes.wav", "--json", "--model", model, "--params", moved)
    assert warned.exit_code == 0, warned.output
    assert json.loads(warned.stdout)["settings"] == recorded
    (line,) = [line for line in warned.stderr.splitlines() if line.startswith("warning: ")]
    assert (f"was evaluated at average_window_ms 500, detection_threshold {recorded['detection_threshold']:g} ({moved} "
            "says 640, 0.42); using the model's" in line and "--threshold" in line), line  # fmt: skip

    flagged = kws("stream", wavs / "yes.wav", "--json", "--model", model, "--params", moved, "--threshold", "0.5",
                  "--average-window-ms", "640")  # fmt: skip
    report = json.loads(flagged.stdout)
    assert report["settings"] == recorded | {"detection_threshold": 0.5, "average_window_ms": 640.0}
    assert report["settings_from"] == "model card + flags"
    assert not [line for line in flagged.stderr.splitlines() if line.startswith("warning: ")], flagged.stderr

    inspected = json.loads(kws("inspect", "--json", "--model", model, *_p(frozen)).stdout)
    assert inspected["recognize"] == recorded

    human = kws("stream", wavs / "yes.wav", "--model", shared, "--params", tmp_path / "none.yaml")
    assert "detection(s) at threshold 0.55 (settings from model card)" in human.stdout, human.stdout

    del card["recognize"]["suppression_ms"]  # a card from a version that recorded fewer settings: the rest is said
    (shared / "assets" / "kws.json").write_text(json.dumps(card))
    partial = json.loads(kws("stream", wavs / "yes.wav", "--json", "--model", shared, "--params", moved).stdout)
    assert partial["settings"]["suppression_ms"] == frozen.params.evaluate.streaming.suppression_ms != 750.0
    assert partial["settings_from"] == f"model card + {moved} (suppression_ms)"

    for bad, expected in (({"rearm": "never"}, "recognize.rearm: Input should be 'release' or 'other_command'"),
                          ({"detection_threshold": "high"}, "recognize.detection_threshold: expected a number, not text (got 'high')"),
                          ({"threshold": 0.5}, "recognize.threshold is not a RecognizeCommands setting")):  # fmt: skip
        (shared / "assets" / "kws.json").write_text(json.dumps({**card, "recognize": {**card["recognize"], **bad}}))
        line = _one_line_error(kws("stream", wavs / "yes.wav", "--model", shared, *_p(frozen)))
        assert line.startswith(f"error: {shared}: its model card's {expected}") and line.endswith("re-run the freeze stage"), line
    (shared / "assets" / "kws.json").write_text("{not json")
    line = _one_line_error(kws("inspect", "--model", shared, *_p(frozen)))
    assert line.startswith(f"error: {shared}/assets/kws.json is not valid JSON"), line


def test_listen_reads_raw_pcm_from_stdin_at_real_time_pace(frozen, tmp_path):
    """`kws listen --input -` on a 6 s recording written at real-time pace in 100 ms pieces (as arecord does):
    one line per detection, the detections of `kws stream` on the same audio, and the per-chunk latency."""
    import subprocess
    import sys
    import time

    from pipeline.stream.recording import make_recording

    params = frozen.params
    split = params.paths.split
    settings = params.evaluate.streaming.model_copy(update={"recording_seconds": 6})
    audio, truth = make_recording(np.load(split / "testing_audio.npy"), np.load(split / "testing_labels.npy"), params.labels,
                                  np.load(split / "background_testing.npy"), settings, 16000, seed=2)  # fmt: skip
    sf.write(tmp_path / "rec.wav", audio, 16000, subtype="PCM_16")
    model = frozen.work / "export" / "model_float.tflite"
    streamed = json.loads(kws("stream", tmp_path / "rec.wav", "--json", "--model", model, *_p(frozen)).stdout)["detections"]
    assert streamed, "the recording holds words the tiny model hears"
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    listener = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "listen", "--input", "-", "--model", str(model),
                                 "--latency", *_p(frozen)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    piece = 1600  # 100 ms
    start = time.monotonic()
    for i in range(0, len(pcm), piece):
        listener.stdin.write(pcm[i : i + piece].tobytes())
        listener.stdin.flush()
        time.sleep(max(0.0, start + (i + piece) / 16000 - time.monotonic()))
    out, err = listener.communicate(timeout=120)  # closes stdin: the end of the recording
    assert listener.returncode == 0, err.decode()
    heard = [line.split() for line in out.decode().strip().splitlines()]
    assert [(float(t), label) for t, _s, label, _score in heard] == [(d["time_s"], d["label"]) for d in streamed]
    stderr = [line for line in err.decode().strip().splitlines() if not line.startswith("INFO: ")]  # LiteRT's own
    threshold = frozen.params.evaluate.streaming.detection_threshold
    assert stderr[0] == f"listening (-, 16000 Hz, 100 ms chunks; threshold {threshold:g}, settings from model card) for: yes no", stderr
    assert stderr[-1].startswith("chunks 60, audio 6.00 s, latency per chunk ms: median ")
    assert float(stderr[-1].split("median ")[1].split(",")[0]) > 0, stderr[-1]


def test_user_mistakes_are_one_line(frozen, tmp_path, wavs):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({**frozen.raw, "freeze": {"registered_model_nam": "x"}}))
    line = _one_line_error(kws("inspect", "--params", bad))
    assert "freeze.registered_model_nam" in line
    assert "no such model" in _one_line_error(kws("inspect", "--model", tmp_path / "nope", *_p(frozen)))
    assert "has no alias 'gone'" in _one_line_error(kws("label-wav", wavs / "yes.wav", "--model", f"models:/{MODEL_NAME}@gone", *_p(frozen)))
    assert "cannot read audio" in _one_line_error(kws("stream", wavs / "broken.wav", *_p(frozen)))
    no_export = tmp_path / "noexport.yaml"
    no_export.write_text(yaml.safe_dump({**frozen.raw, "paths": {**frozen.raw["paths"], "export": str(tmp_path / "x")}}))
    assert "run the freeze stage" in _one_line_error(kws("label-wav", wavs / "yes.wav", "--params", no_export))


def test_data_info_on_the_tiny_raw_folder(frozen):
    result = kws("data", "info", "--json", *_p(frozen))
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    counts = {row["word"]: row["clips"] for row in rows}
    assert counts["yes"] == counts["no"] == counts["cat"] == 40 and "_background_noise_" in counts
    human = kws("data", "info", frozen.params.paths.raw / "tones", *_p(frozen))
    assert human.exit_code == 0 and "yes" in human.stdout


def test_spectrogram_writes_a_png(frozen, wavs, tmp_path):
    result = kws("spectrogram", wavs / "yes.wav", tmp_path / "yes.png", *_p(frozen))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "yes.png").read_bytes()[:4] == b"\x89PNG"
    assert _one_line_error(kws("spectrogram", tmp_path / "nope.wav", tmp_path / "x.png", *_p(frozen))) == f"error: {tmp_path / 'nope.wav'}: no such file"


def test_data_generate_writes_espeak_and_neural_voices(tmp_path):
    """`kws data generate` makes what the synthetic source makes: espeak voices, noises and the neural voices."""
    from pipeline.config import ParamsLoader

    params = yaml.load((Path(__file__).parents[2] / "params.yaml").read_text(encoding="utf-8"), Loader=ParamsLoader)
    params["data"]["keywords"], params["data"]["unknown_words"] = ["stop"], ["bed", "cat"]
    params["data"]["confusable_words"] = ["so"]  # said by the espeak voices only
    params["data"]["sources"][0]["kokoro_unknown_words"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    result = kws("data", "generate", "--out", tmp_path / "out", "--speakers", 2, "--repetitions", 1, "--no-piper",
                 "--kokoro-blends", 1, "--params", tmp_path / "params.yaml")  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    # --speakers counts every voice: 1 espeak speaker (3 words + the near-miss word) + the Kokoro blend named
    # (stop + 1 unknown word, no near-miss word)
    assert summary["clips"] == 4 and summary["speakers"] == 1
    assert summary["neural"] == {**summary["neural"], "clips": 2, "speakers": 1} and "seconds" not in summary
    assert len(list((tmp_path / "out" / "stop").glob("*.wav"))) == 2
    assert len(list((tmp_path / "out" / "so").glob("*.wav"))) == 1
    assert (tmp_path / "out" / "_background_noise_").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "params.yaml"]  # the temporary folder is gone


def test_data_generate_passes_the_male_share_and_refuses_one_outside_0_1(tmp_path, monkeypatch):
    from pipeline.data import sources

    seen = []
    monkeypatch.setattr(sources, "generate_synthetic", lambda source, params, out, progress: seen.append(source) or {})
    result = kws("data", "generate", "--out", tmp_path / "out", "--speakers", 3, "--kokoro-blends", 1,
                 "--kokoro-male-share", 0.35)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [(s.kokoro_male_share, s.kokoro_blends) for s in seen] == [(0.35, 1)]
    for bad in ("0", "1", "-0.2"):
        refused = kws("data", "generate", "--out", tmp_path / "bad", "--kokoro-male-share", bad)
        assert refused.exit_code == 2 and f"{float(bad)} is not in (0, 1)" in refused.output, refused.output
    assert len(seen) == 1 and not (tmp_path / "bad").exists()
    unused = kws("data", "generate", "--out", tmp_path / "none", "--speakers", 3, "--kokoro-blends", 0, "--kokoro-male-share", 0.35)
    assert unused.exit_code == 0 and "warning: --kokoro-male-share has no effect" in unused.output


def test_data_generate_interrupted_leaves_no_corpus(tmp_path, monkeypatch):
    """A generation that fails half-way (here: the third speaker) leaves neither `--out` nor its temporary folder."""
    from pipeline.data import synthetic

    real, calls = synthetic.speaker_clips, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise DataError("voice x produced silence for 'yes'")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "speaker_clips", failing)
    monkeypatch.setenv("KWS_WORKERS", "1")  # in this process, so the patch applies
    result = kws("data", "generate", "--out", tmp_path / "out", "--speakers", 4, "--repetitions", 1, "--no-piper",
                 "--kokoro-blends", 0)  # fmt: skip
    assert result.exit_code == 1 and "produced silence" in result.output
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_data_generate_ctrl_c_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """Found by a new user: Ctrl-C printed the espeak server's KeyboardInterrupt tracebacks and no word from kws."""
    from pipeline.data import synthetic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "speaker_clips", interrupted)
    monkeypatch.setenv("KWS_WORKERS", "1")
    result = kws("data", "generate", "--out", tmp_path / "out", "--speakers", 2, "--repetitions", 1, "--no-piper",
                 "--kokoro-blends", 0)  # fmt: skip
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1] == "interrupted: nothing half-written was kept"
    assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []
    assert "signal.SIG_IGN" in synthetic._SERVER  # the speech server leaves Ctrl-C to its client


@pytest.mark.parametrize("where", ["a_file", "a_file/sub"])
def test_data_generate_out_that_cannot_be_a_folder_is_one_line(tmp_path, where):
    """Found by a new user: --out naming a file silently replaced it; a path under a file was a traceback."""
    (tmp_path / "a_file").write_text("keep me")
    result = kws("data", "generate", "--out", tmp_path / where, "--speakers", 1, "--repetitions", 1, "--no-piper",
                 "--kokoro-blends", 0)  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith(f"error: {tmp_path / where}: ")
    assert (tmp_path / "a_file").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
