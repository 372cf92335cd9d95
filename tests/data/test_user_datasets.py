"""Datasets users bring (issue 14): every file goes in whole, is quarantined with a reason, or is refused by name.

Each test builds a small folder of tone clips, runs the download and split stages' library functions, and checks
the packed audio against the manifest row by row and the file ledger (`reports/files.csv`) against the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.data.sources import fetch_sources
from pipeline.data.split import hash_percentage, run_split
from pipeline.errors import DataError
from tests.conftest import make_params, speaker_id, tone_clip, write_tone_corpus

WORDS = {"keywords": ["yes", "no"], "unknown_words": ["cat", "dog"]}
SPLIT = {"validation_percentage": 30, "testing_percentage": 30, "unknown_percentage": 50, "silence_percentage": 20}


def assert_packed_rows_are_their_manifest_rows(params) -> int:
    """Every row of every packed `*_audio.npy` is the audio of its manifest row; returns the rows checked."""
    manifest = pd.read_parquet(params.paths.split / "manifest.parquet")
    clip_samples = params.features.clip_samples
    checked = 0
    for name, rows in manifest.groupby("set"):
        audio = np.load(params.paths.split / f"{name}_audio.npy")
        assert audio.shape == (len(rows), clip_samples)
        assert rows["index"].tolist() == list(range(len(rows)))
        for row in rows.itertuples():
            file = params.paths.raw / row.path
            if file.is_file():
                expected, _ = sf.read(file, dtype="int16")
                expected = np.pad(expected[:clip_samples], (0, max(clip_samples - len(expected), 0)))
                np.testing.assert_array_equal(audio[row.index], expected, err_msg=row.path)
            else:  # a generated silence excerpt: its sha256 is recorded in the manifest
                assert row.label == "_silence_", row.path
                assert hashlib.sha256(audio[row.index].tobytes()).hexdigest() == row.sha256, row.path
            checked += 1
    return checked


def run(tmp_path, corpus, **sections):
    params = make_params(tmp_path, sources=[{"kind": "local", "name": "mine", "path": str(corpus)}], data=WORDS,
                         split={**SPLIT, **sections.pop("split", {})}, **sections)  # fmt: skip
    fetch_sources(params, progress=False)
    result = run_split(params, progress=False)
    ledger = pd.read_csv(params.paths.reports / "files.csv", keep_default_na=False)
    return params, result, ledger


def corpus(tmp_path, speakers=12):
    return write_tone_corpus(tmp_path / "corpus", ["yes", "no", "cat", "dog"], speakers=speakers, reps=1, noise_seconds=20)


def test_at_sign_in_file_names_keeps_every_packed_row_on_its_own_audio(tmp_path):
    """Fault 1: `@` in a name was taken for a silence excerpt, shifting the packed audio against the manifest."""
    root = corpus(tmp_path)
    for n, day in enumerate(("2021-03-04", "2021-03-05")):
        sf.write(root / "yes" / f"rec@{day}_nohash_{n}.wav", tone_clip("yes", 50 + n, 0, slot=0), 16000, subtype="PCM_16")
    for silence in (1, 20):
        params, result, ledger = run(tmp_path / f"s{silence}", root, split={"silence_percentage": silence})
        assert assert_packed_rows_are_their_manifest_rows(params) == len(result.manifest)
        at = ledger[ledger["path"].str.contains("@")]
        assert at["path"].tolist() == ["mine/yes/rec@2021-03-04_nohash_0.wav", "mine/yes/rec@2021-03-05_nohash_1.wav"]
        assert (at["status"] == "used").all()
        assert (result.manifest["label"] == "yes").sum() == 14


def test_clips_in_sub_folders_of_a_word_folder_are_all_used(tmp_path):
    """Fault 2: `yes/session1/*.wav` was dropped silently; the word is the top folder."""
    root = corpus(tmp_path, speakers=20)
    for s in range(20):
        path = root / "yes" / "session1" / f"{speaker_id(100 + s)}_nohash_0.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, tone_clip("yes", 100 + s, 0, slot=0), 16000, subtype="PCM_16")
    params, result, ledger = run(tmp_path, root)
    yes = ledger[ledger["label"] == "yes"]
    assert len(yes) == 40 and (yes["status"] == "used").all()
    assert (yes["path"].str.startswith("mine/yes/session1/")).sum() == 20
    assert result.summary["words"]["yes"] == {"label": "yes", "clips": 40}
    assert assert_packed_rows_are_their_manifest_rows(params) == len(result.manifest)


def test_a_folder_differing_from_a_keyword_only_in_case_is_that_keyword(tmp_path, caplog):
    """Fault 3: `Yes/` beside `yes/` became _unknown_ negatives of `yes`; alone it left `yes` with no rows."""
    root = corpus(tmp_path)
    for s in range(12):
        path = root / "Yes" / f"{speaker_id(200 + s)}_nohash_0.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, tone_clip("yes", 200 + s, 0, slot=0), 16000, subtype="PCM_16")
    params, result, ledger = run(tmp_path / "both", root)
    assert result.summary["mapped_folders"] == {"mine": {"Yes": "yes"}}
    assert "clips taken as the word 'yes'" in caplog.text
    assert (ledger.loc[ledger["path"].str.contains(speaker_id(200)), "label"] == "yes").all()
    assert result.summary["words"]["yes"] == {"label": "yes", "clips": 24}
    assert "_unknown_" not in set(result.manifest.loc[result.manifest["word"] == "yes", "label"])
    shutil.rmtree(root / "yes")
    _, alone, _ = run(tmp_path / "alone", root)
    assert alone.summary["words"]["yes"] == {"label": "yes", "clips": 12}


def test_the_same_clip_name_in_two_case_variants_is_refused_by_name(tmp_path):
    root = corpus(tmp_path)
    (root / "YES").mkdir()
    shutil.copy(root / "yes" / f"{speaker_id(0)}_nohash_0.wav", root / "YES" / f"{speaker_id(0)}_nohash_0.wav")
    with pytest.raises(DataError, match=rf"corpus/yes/{speaker_id(0)}_nohash_0.wav and .*corpus/YES/{speaker_id(0)}_nohash_0.wav both map to yes/{speaker_id(0)}_nohash_0.wav; rename one$"):
        run(tmp_path, root)


def test_macos_companions_and_hidden_files_are_skipped_and_counted(tmp_path):
    """Fault 6: one `._x.wav` per clip made the split stop at 50 % bad files."""
    root = corpus(tmp_path)
    clips = sorted(root.glob("*/*.wav"))
    for clip in clips:
        (clip.parent / f"._{clip.name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "yes" / ".git").mkdir()
    params, result, ledger = run(tmp_path, root)
    assert result.summary["quarantined"] == 0
    assert result.summary["skipped_by_reason"] == {"hidden file": len(clips) + 1, "hidden folder": 1}
    assert result.summary["files"]["skipped"] == len(clips) + 2


def test_unreadable_files_links_and_misplaced_files_are_quarantined_by_name(tmp_path, monkeypatch):
    """Fault 8: an unreadable file gave a PermissionError traceback; broken and looping links vanished."""
    root = corpus(tmp_path, speakers=20)
    unreadable = root / "no" / "locked00_nohash_0.wav"
    sf.write(unreadable, tone_clip("no", 70, 0, slot=1), 16000, subtype="PCM_16")
    (root / "yes" / "gone0000_nohash_0.wav").symlink_to(root / "nowhere.wav")
    (root / "yes" / "loop0000_nohash_0.wav").symlink_to(root / "yes" / "loop0000_nohash_0.wav")
    os.mkfifo(root / "cat" / "pipe0000_nohash_0.wav")
    (root / "dog" / "notes.txt").write_text("recorded in the kitchen")
    sf.write(root / "stray_nohash_0.wav", tone_clip("yes", 71, 0), 16000, subtype="PCM_16")
    real_copy = shutil.copyfile

    def copy(src, dst, *args, **kwargs):  # root reads any file, so the permission error is simulated
        if str(src).endswith("locked00_nohash_0.wav"):
            raise PermissionError(13, "Permission denied", str(src))
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy)
    params, result, ledger = run(tmp_path, root, split={"max_bad_fraction": 0.1})
    quarantine = pd.read_csv(params.paths.reports / "quarantine.csv")
    assert dict(zip(quarantine["path"], quarantine["reason"], strict=True)) == {
        "mine/cat/pipe0000_nohash_0.wav": "not a regular file",
        "mine/dog/notes.txt": "not a .wav file in a word folder",
        "mine/no/locked00_nohash_0.wav": "cannot read: Permission denied",
        "mine/stray_nohash_0.wav": "wav outside any word folder: put it in a folder named after its word",
        "mine/yes/gone0000_nohash_0.wav": "broken or looping symbolic link",
        "mine/yes/loop0000_nohash_0.wav": "broken or looping symbolic link",
    }
    assert result.summary["quarantined_by_check"] == {"import": 6}
    assert result.summary["files"]["quarantined"] == 6 == (ledger["status"] == "quarantined").sum()
    assert json.loads((params.paths.reports / "split.json").read_text())["files"]["used"] > 0


def test_a_set_with_no_clips_is_refused_before_training(tmp_path):
    """Fault 5 at run time: min_class_count 0 let an empty validation set through to a training crash."""
    root = corpus(tmp_path, speakers=6)
    lowest = min(hash_percentage(f"{speaker_id(s)}_nohash_0.wav") for s in range(6))
    split = {"validation_percentage": lowest / 2, "min_class_count": 0}
    with pytest.raises(DataError, match=r"split: the validation set gets no clips \(6 speaker\(s\) in all") as info:
        run(tmp_path, root, split=split)
    assert "\n" not in str(info.value) and "`split: {salt: <any text>}`" in str(info.value), "names the fix for TF's own test set"



def test_a_keyword_without_clips_names_the_folders_found(tmp_path):
    root = corpus(tmp_path)
    shutil.move(root / "yes", root / "yess")
    with pytest.raises(DataError, match=r"no usable clips of keyword\(s\) \['yes'\] in any source; word folders found: \['cat', 'dog', 'no', 'yess'\]"):
        run(tmp_path, root)
