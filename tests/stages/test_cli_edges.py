"""`kws` at its edges without a trained model: arguments and files checked before any model loads, one-line
errors in our words, `--version`, and `kws spectrogram` on the shipped params.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ParamsLoader
from tests.conftest import REPO, tone_clip


def kws(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _errors(result) -> list[str]:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.stderr.strip().splitlines()


def test_version():
    from importlib.metadata import version

    result = kws("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"kws {version('kws-pipeline')}"


def test_files_are_checked_before_the_model(tmp_path):
    """Fault: a missing input was reported after the model loaded (~20 s), in libsndfile's words ('System error');
    a folder got 'Format not recognised'. Here the model does not even exist: only the files are named."""
    (tmp_path / "folder").mkdir()
    result = kws("label-wav", tmp_path / "nope.wav", tmp_path / "folder", "--model", tmp_path / "missing.tflite")
    assert result.exit_code == 1 and result.stdout == ""
    assert _errors(result) == [f"error: {tmp_path / 'nope.wav'}: no such file",
                               f"error: {tmp_path / 'folder'}: is a folder; expected an audio file (wav/flac)"]  # fmt: skip
    stream = kws("stream", tmp_path / "folder", "--model", tmp_path / "missing.tflite")
    assert stream.exit_code == 1 and _errors(stream) == [f"error: {tmp_path / 'folder'}: is a folder; expected an audio file (wav/flac)"]


def test_model_argument_is_checked_before_loading(tmp_path):
    sf.write(tmp_path / "yes.wav", tone_clip("yes", 1, 1), 16000, subtype="PCM_16")
    (tmp_path / "notes.txt").write_text("hello")
    for model, words in ((tmp_path / "missing.tflite", "no such model file or folder"),
                         (tmp_path / "notes.txt", "not a model; expected a SavedModel folder"),
                         ("runs:/abc/model", "unsupported model URI")):  # fmt: skip
        result = kws("label-wav", tmp_path / "yes.wav", "--model", model)
        (line,) = _errors(result)
        assert result.exit_code == 1 and line.startswith("error: ") and words in line, line


def test_listen_refuses_an_unknown_input(tmp_path):
    result = kws("listen", "--input", "radio", "--model", tmp_path / "missing.tflite")
    assert result.exit_code == 1 and _errors(result) == ["error: --input 'radio': expected '-' (raw PCM on stdin) or 'mic'"]


@pytest.mark.slow
def test_spectrogram_on_the_shipped_params(tmp_path):
    """Fault: `kws spectrogram in.wav out.png` crashed on the shipped params (speech_embedding); MFCC configs cut a
    3 s file to its first second. Now a 1 s, a 3 s stereo 44.1 kHz and an 8 kHz file are drawn whole."""
    yes = tone_clip("yes", 3, 0)
    sf.write(tmp_path / "one.wav", yes, 16000, subtype="PCM_16")
    t = np.arange(3 * 44100) / 44100
    sf.write(tmp_path / "three.wav", np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, axis=1), 44100, subtype="PCM_16")
    sf.write(tmp_path / "eight.wav", yes[::2], 8000, subtype="PCM_16")
    raw = yaml.load((REPO / "params.yaml").read_text(), Loader=ParamsLoader)
    raw["features"]["embedding"]["finetune"]["convs"] = 0  # the pretrained backbone: no finetune stage run needed
    shipped = tmp_path / "params.yaml"
    shipped.write_text(yaml.safe_dump(raw, sort_keys=False))
    expected = {  # mel frames 1 + (S - 512) // 160, vectors 1 + (S - 12512) // 1280, S at 16 kHz
        "one": "1.00 s; speech-embedding mel input (embedding_mel): 97 frames × 32; speech embedding (speech_embedding): 3 frames × 96",
        "three": "3.00 s; speech-embedding mel input (embedding_mel): 297 frames × 32; speech embedding (speech_embedding): 28 frames × 96",
        "eight": "1.00 s; speech-embedding mel input (embedding_mel): 97 frames × 32; speech embedding (speech_embedding): 3 frames × 96",
    }  # fmt: skip
    for name, summary in expected.items():
        result = kws("spectrogram", tmp_path / f"{name}.wav", tmp_path / f"{name}.png", "--params", shipped)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"wrote {tmp_path / f'{name}.png'}: {summary}"
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "resampled 44100 Hz to 16000 Hz" in kws("spectrogram", tmp_path / "three.wav", tmp_path / "x.png", "--params", shipped).stderr
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    empty = kws("spectrogram", tmp_path / "empty.wav", tmp_path / "e.png", "--params", shipped)
    assert empty.exit_code == 1 and _errors(empty) == [f"error: {tmp_path / 'empty.wav'}: the audio holds no samples (0 frames)"]
    assert not Path(tmp_path / "e.png").exists()
    # the shipped params tune the backbone: before the finetune stage ran, one line says which file and stage
    raw["features"]["embedding"]["finetune"]["convs"] = 9
    raw["paths"]["backbone"] = str(tmp_path / "backbone")
    shipped.write_text(yaml.safe_dump(raw, sort_keys=False))
    untuned = kws("spectrogram", tmp_path / "one.wav", tmp_path / "t.png", "--params", shipped)
    assert untuned.exit_code == 1 and _errors(untuned) == [
        f"error: {tmp_path / 'backbone' / 'backbone.npz'}: not found; run the finetune stage first"], untuned.output
