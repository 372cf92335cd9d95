"""The `local` source in both layouts, including the real clips in ../shared when present."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from pipeline.data.info import dataset_info
from pipeline.data.layout import detect_layout
from pipeline.data.sources import fetch_sources
from pipeline.errors import DataError
from tests.conftest import REAL_DEV, REAL_NOISE, make_params, requires_shared, tone_clip, write_tone_corpus


def test_speech_commands_layout_is_copied_as_is(tmp_path):
    write_tone_corpus(tmp_path / "corpus", ["yes", "cat"], speakers=3, reps=2)
    params = make_params(tmp_path)
    summary = fetch_sources(params, progress=False)["tones"]
    assert summary["clips"] == 12 and summary["noise_files"] == 2 and summary["layout"] == "speech_commands"
    raw = params.paths.raw / "tones"
    assert sorted(p.name for p in raw.iterdir()) == ["_background_noise_", "cat", "source.json", "yes"]
    assert json.loads((raw / "source.json").read_text())["kind"] == "local"


def test_test_set_layout_is_brought_into_the_training_layout(tmp_path):
    root = tmp_path / "corpus"
    for rel in ("yes/0c540988_nohash_0.wav", "_unknown_/backward_0c540988_nohash_1.wav.wav", "_silence_/3.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, tone_clip("x", 1, 0), 16000, subtype="PCM_16")
    (root / "LICENSE").write_text("CC BY 4.0")
    noise = tmp_path / "noise"
    noise.mkdir()
    sf.write(noise / "pink.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    params = make_params(tmp_path, sources=[{"kind": "local", "name": "t", "path": str(root), "background_noise": str(noise)}])
    assert detect_layout(root) == "test_set"
    summary = fetch_sources(params, progress=False)["t"]
    assert summary["layout"] == "test_set" and summary["clips"] == 3 and summary["noise_files"] == 1
    raw = params.paths.raw / "t"
    assert (raw / "backward" / "0c540988_nohash_1.wav").is_file()
    assert (raw / "_silence_" / "3.wav").is_file()
    assert (raw / "_background_noise_" / "pink.wav").is_file()
    assert not (raw / "_unknown_").exists()


def test_missing_folder_is_a_one_line_error(tmp_path):
    params = make_params(tmp_path, sources=[{"kind": "local", "name": "x", "path": str(tmp_path / "nope")}])
    with pytest.raises(DataError, match="not found"):
        fetch_sources(params, progress=False)
    assert not params.paths.raw.exists(), "a failed download leaves no half-written raw folder"


@requires_shared
def test_real_dev_clips_in_test_set_layout(tmp_path):
    params = make_params(
        tmp_path,
        sources=[{"kind": "local", "name": "real_dev", "path": str(REAL_DEV), "background_noise": str(REAL_NOISE)}],
    )
    summary = fetch_sources(params, progress=False)["real_dev"]
    assert summary == {
        "kind": "local", "clips": 2201, "noise_files": 6, "layout": "test_set", "root": ".", "mapped_folders": {},
        "skipped": [{"path": "LICENSE", "reason": "not audio (outside word folders)"}], "rejected": [],
    }  # fmt: skip
    table = dataset_info(params.paths.raw).set_index("word")
    assert table.loc["_silence_", "clips"] == 210
    assert table.loc["yes", "clips"] == 189
    assert table.drop(index=["_silence_", "_background_noise_", *"yes no up down left right on off stop go".split()])["clips"].sum() == 179
    assert 50 < table.loc["yes", "speakers"] < 189


def test_the_import_line_counts_the_neural_clips_beside_the_espeak_ones():
    from pipeline.data.sources import describe_import

    generated = {"kind": "synthetic", "clips": 30080, "speakers": 320, "neural": {"clips": 1059, "speakers": 65}}
    assert describe_import(generated) == "kind synthetic, clips 30,080 espeak + 1,059 neural, speakers 320"
    assert describe_import({"kind": "local", "clips": 12, "skipped": ["a.txt"]}) == "kind local, clips 12, skipped 1"


def test_no_mlflow_progress_bars_in_a_log(monkeypatch):
    import os

    from pipeline import runner

    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    monkeypatch.setattr(runner, "show_progress", lambda: False)
    runner.quiet_environment()
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    monkeypatch.setattr(runner, "show_progress", lambda: True)
    runner.quiet_environment()
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
