"""The split stage's Great Expectations suites on small hand-made manifests."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from pipeline.data.validate import FileCheck, build_data_docs, check_files, check_sets

LABELS = ["_silence_", "_unknown_", "yes", "no"]
SPEAKERS = {"training": ["aaaa0001", "aaaa0002"], "validation": ["bbbb0001"], "testing": ["cccc0001"]}
CHECK = FileCheck(sample_rate=16000, max_ms=1000, min_rms=0.002)


def clip_row(label: str, speaker: str, set_name: str, rep: int = 0, **overrides: object) -> dict:
    """One manifest row of a good 1 s, 16 kHz, mono, 16-bit clip."""
    word = "bed" if label == "_unknown_" else label
    path = f"tones/{word}/{speaker}_nohash_{rep}.wav"
    if label == "_silence_":
        path, speaker = f"tones/_background_noise_/white.wav@{set_name}:{speaker}-{rep}", "noise-white"
    row = {
        "path": path, "source": "tones", "word": word, "label": label, "label_index": LABELS.index(label),
        "speaker": speaker, "repetition": rep, "set": set_name, "sample_rate": 16000, "channels": 1, "bits": 16,
        "original_length": 16000, "rms": 0.05, "peak": 0.3, "sha256": hashlib.sha256(path.encode()).hexdigest(),
    }  # fmt: skip
    return {**row, **overrides}


@pytest.fixture
def manifest() -> pd.DataFrame:
    """Every label in every set, distinct speakers and hashes per set, an arbitrary (non-range) index."""
    rows = [
        clip_row(label, speaker, set_name, rep)
        for set_name, speakers in SPEAKERS.items()
        for speaker in speakers
        for label in LABELS
        for rep in range(2)
    ]
    frame = pd.DataFrame(rows)
    frame.index = [1000 + 7 * i for i in range(len(frame))]
    return frame


def set_row(frame: pd.DataFrame, position: int, **values: object) -> pd.DataFrame:
    """A copy of `frame` with some columns of one row (by position) changed."""
    frame = frame.copy()
    for column, value in values.items():
        frame.iloc[position, frame.columns.get_loc(column)] = value
    return frame


def test_clean_manifest_passes_both_checks(manifest):
    assert check_files(manifest, CHECK).empty
    result = check_sets(manifest, LABELS, min_class_count=2)
    assert result.success, result.failures
    assert result.failures == []
    assert len(result.results) >= 4 and all(r.success for r in result.results)


def test_check_files_flags_each_bad_file_with_its_reason(manifest):
    words = manifest.index[manifest["label"] == "yes"]
    silence = manifest.index[manifest["label"] == "_silence_"]
    bad = manifest.copy()
    bad.loc[words[0], "sample_rate"] = 8000
    bad.loc[words[1], "channels"] = 2
    bad.loc[words[2], "bits"] = 8
    bad.loc[words[3], "original_length"] = 48000
    bad.loc[words[4], "rms"] = 0.0
    bad.loc[silence[0], "rms"] = 0.0  # silence may be silent
    bad.loc[words[5], ["sample_rate", "bits"]] = [8000, 8]
    bad["bits"] = bad["bits"].astype(float)  # as when undecodable rows (NaN) were dropped from the scan
    failing = check_files(bad, CHECK)
    assert list(failing.columns) == ["path", "check", "reason"]
    reasons = dict(zip(failing["path"], failing["reason"], strict=True))
    path = bad["path"]
    assert reasons == {
        path[words[0]]: "sample rate 8000 Hz, expected 16000; length 16000 samples (2.000 s), expected at most 1 s",
        path[words[1]]: "stereo (2 channels), expected mono",
        path[words[2]]: "8-bit, expected 16-bit",
        path[words[3]]: "length 48000 samples (3.000 s), expected at most 1 s",
        path[words[4]]: "silent: rms 0.0000 < 0.002",
        path[words[5]]: "sample rate 8000 Hz, expected 16000; 8-bit, expected 16-bit; length 16000 samples (2.000 s), expected at most 1 s",
    }


def test_check_files_flags_empty_and_unknown_format(manifest):
    bad = set_row(set_row(manifest, 2, original_length=0), 3, bits=0)
    failing = check_files(bad, CHECK)
    reasons = dict(zip(failing["path"], failing["reason"], strict=True))
    assert reasons[bad["path"].iloc[2]] == "length 0 samples, expected at least 1"
    assert reasons[bad["path"].iloc[3]] == "unknown sample format, expected 16-bit"


def test_length_is_compared_in_time_not_across_sample_rates(manifest):
    """A 1.0 s clip at 44.1 kHz is wrong only in its rate; 1.5 s at 8 kHz is wrong in both (fault 7 of issue 14)."""
    bad = set_row(set_row(manifest, 2, sample_rate=44100, original_length=44100), 3, sample_rate=8000, original_length=12000)
    failing = check_files(bad, CHECK).set_index("path")
    assert failing.loc[bad["path"].iloc[2], "reason"] == "sample rate 44100 Hz, expected 16000"
    assert failing.loc[bad["path"].iloc[2], "check"] == "sample_rate"
    assert failing.loc[bad["path"].iloc[3], "reason"] == (
        "sample rate 8000 Hz, expected 16000; length 12000 samples (1.500 s), expected at most 1 s"
    )
    assert failing.loc[bad["path"].iloc[3], "check"] == "sample_rate+duration"


def test_check_sets_catches_speaker_in_two_sets(manifest):
    moved = manifest["speaker"] == "bbbb0001"
    manifest.loc[moved & (manifest["label"] == "yes"), "set"] = "testing"
    result = check_sets(manifest, LABELS, min_class_count=1)
    assert not result.success
    assert any("speaker 'bbbb0001' appears in validation and testing" in line for line in result.failures)
    assert all("noise-white" not in line for line in result.failures), "silence rows share a speaker on purpose"


def test_check_sets_catches_same_audio_in_two_sets(manifest):
    training = manifest.index[manifest["set"] == "training"][0]
    testing = manifest.index[manifest["set"] == "testing"][0]
    manifest.loc[testing, "sha256"] = manifest.loc[training, "sha256"]
    result = check_sets(manifest, LABELS, min_class_count=1)
    assert not result.success
    [line] = [f for f in result.failures if "sha256" in f]
    assert "appears in training and testing" in line and manifest.loc[testing, "path"] in line


def test_check_sets_catches_missing_class_in_a_set(manifest):
    dropped = manifest[~((manifest["set"] == "validation") & (manifest["label"] == "no"))]
    result = check_sets(dropped, LABELS, min_class_count=1)
    assert not result.success
    assert any("label 'no' has 0 rows in validation, expected at least 1" in line for line in result.failures)
    too_few = check_sets(manifest, LABELS, min_class_count=3)
    assert any("has 2 rows in validation, expected at least 3" in line for line in too_few.failures)


def test_check_sets_catches_unknown_label_and_wrong_index(manifest):
    bad = set_row(set_row(manifest, 0, label="maybe"), 1, label_index=9)
    result = check_sets(bad, LABELS, min_class_count=1)
    assert not result.success
    text = "\n".join(result.failures)
    assert "expect_column_values_to_be_in_set [label]: label 'maybe' (1 rows)" in text
    assert f"label {bad['label'].iloc[1]!r} has label_index 9, expected {LABELS.index(bad['label'].iloc[1])}" in text
    assert not any("[set]" in line for line in result.failures)


def test_build_data_docs_writes_html_and_json(manifest, tmp_path):
    good = check_sets(manifest, LABELS, min_class_count=1)
    index = build_data_docs(good.results, tmp_path / "docs", tmp_path / "validation.json")
    assert index == (tmp_path / "docs" / "index.html").resolve() and index.is_file()
    html = index.read_text(encoding="utf-8")
    assert all(result.suite_name in html for result in good.results)
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["success"] is True
    assert all(e["success"] for s in report["suites"] for e in s["expectations"])

    bad = check_sets(set_row(manifest, 0, label="maybe"), LABELS, min_class_count=1)
    build_data_docs(bad.results, tmp_path / "docs", tmp_path / "validation.json")
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["success"] is False
    [label_check] = [e for s in report["suites"] for e in s["expectations"] if e["kwargs"].get("column") == "label"]
    assert label_check["observed"]["unexpected_count"] == 1
    assert len(list((tmp_path / "docs" / "validations").rglob("*.html"))) == len(bad.results)  # old pages replaced
