"""The split stage on a tiny corpus the test writes: sets, balance, quarantine, packing, leakage."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from pipeline.data.background import split_noises
from pipeline.data.sources import fetch_sources
from pipeline.data.split import COLUMNS, run_split
from pipeline.errors import DataError
from tests.conftest import make_params, tone_clip, write_tone_corpus

WORDS = {"keywords": ["yes", "no"], "unknown_words": ["cat", "dog"]}
SPLIT = {"validation_percentage": 30, "testing_percentage": 30, "min_class_count": 1}


def _bad_files(root):
    """One of each kind of broken clip, all under word folders."""
    good = tone_clip("yes", 99, 0)
    (root / "yes" / "corrupt0_nohash_0.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    sf.write(root / "yes" / "empty000_nohash_0.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    sf.write(root / "no" / "stereo00_nohash_0.wav", np.stack([good, good], 1), 16000, subtype="PCM_16")
    sf.write(root / "no" / "eightkhz_nohash_0.wav", good[:8000], 8000, subtype="PCM_16")
    sf.write(root / "cat" / "eightbit_nohash_0.wav", good, 16000, subtype="PCM_U8")
    sf.write(root / "dog" / "longclip_nohash_0.wav", np.tile(good, 3), 16000, subtype="PCM_16")
    return 6


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("split")
    corpus = write_tone_corpus(tmp / "corpus", ["yes", "no", "cat", "dog"], speakers=20, reps=2)
    bad = _bad_files(corpus)
    params = make_params(tmp, data=WORDS, split={**SPLIT, "max_bad_fraction": 0.2})
    fetch_sources(params, progress=False)
    return params, run_split(params, progress=False), bad


def test_quarantine_lists_each_bad_file_with_its_reason(split_run):
    params, result, bad = split_run
    table = pd.read_csv(params.paths.reports / "quarantine.csv")
    assert len(table) == bad == result.summary["quarantined"]
    reasons = dict(zip(table["path"].str.split("/").str[-1], table["reason"], strict=True))
    assert "decode" in reasons["corrupt0_nohash_0.wav"]
    assert "length 0" in reasons["empty000_nohash_0.wav"]
    assert "stereo" in reasons["stereo00_nohash_0.wav"]
    assert "8000" in reasons["eightkhz_nohash_0.wav"]
    assert "8-bit" in reasons["eightbit_nohash_0.wav"]
    assert "48000" in reasons["longclip_nohash_0.wav"]
    assert not set(table["path"]) & set(result.manifest["path"])


def test_manifest_sets_and_balance(split_run):
    params, result, _ = split_run
    manifest = pd.read_parquet(params.paths.split / "manifest.parquet")
    assert list(manifest.columns) == COLUMNS
    assert (params.paths.split / "labels.txt").read_text().split() == ["_silence_", "_unknown_", "yes", "no"]
    assert set(manifest["set"]) == {"training", "validation", "testing"}
    for name, group in manifest.groupby("set"):
        keywords = int(group["label"].isin(["yes", "no"]).sum())
        assert (group["label"] == "_unknown_").sum() == min(math.ceil(keywords * 0.1), result.summary["sets"][name]["unknown_available"])
        assert (group["label"] == "_silence_").sum() == math.ceil(keywords * 0.1)
        assert group["label_index"].tolist() == [["_silence_", "_unknown_", "yes", "no"].index(x) for x in group["label"]]
    words = manifest[manifest["label"] != "_silence_"]
    assert words.groupby("speaker")["set"].nunique().max() == 1
    assert set(manifest["engine"]) == {""}  # imported clips: no generating engine known


def test_packed_arrays_match_the_manifest(split_run):
    params, result, _ = split_run
    manifest = result.manifest
    for name in ("training", "validation", "testing"):
        audio = np.load(params.paths.split / f"{name}_audio.npy")
        labels = np.load(params.paths.split / f"{name}_labels.npy")
        rows = manifest[manifest["set"] == name]
        assert audio.shape == (len(rows), 16000) and audio.dtype == np.int16
        assert labels.tolist() == rows["label_index"].tolist()
        first = rows.iloc[0]
        expected, _ = sf.read(params.paths.raw / first["path"], dtype="int16")
        np.testing.assert_array_equal(audio[first["index"]], expected)
        silence = audio[rows["label"].to_numpy() == "_silence_"]
        assert (np.abs(silence).max(axis=1) > 0).all(), "silence clips are noise excerpts, not zeros"


def test_silence_excerpts_come_from_disjoint_parts_of_the_noise(split_run):
    params, result, _ = split_run
    noise = np.arange(400_000, dtype=np.float32)
    portions = split_noises([("n.wav", "s", noise)], 10, 10, 16000)
    spans = {p.set: (p.audio[0], p.audio[-1]) for p in portions}
    assert spans["training"][1] < spans["validation"][0] and spans["validation"][1] < spans["testing"][0]
    silence = result.manifest[result.manifest["label"] == "_silence_"]
    assert (silence["path"].str.split("@").str[1].str.split(":").str[0] == silence["set"]).all()


def test_split_is_reproducible(split_run, tmp_path):
    params, result, _ = split_run
    again = make_params(tmp_path, data=WORDS, split={**SPLIT, "max_bad_fraction": 0.2})
    shutil.copytree(params.paths.raw, again.paths.raw)
    second = run_split(again, progress=False)
    pd.testing.assert_frame_equal(result.manifest, second.manifest)
    for name in ("training", "testing"):
        a = np.load(params.paths.split / f"{name}_audio.npy")
        np.testing.assert_array_equal(a, np.load(again.paths.split / f"{name}_audio.npy"))


def test_too_many_bad_files_fail_with_the_list_written(split_run, tmp_path):
    params, _, _ = split_run
    strict = make_params(tmp_path, data=WORDS, split={**SPLIT, "max_bad_fraction": 0.01})
    shutil.copytree(params.paths.raw, strict.paths.raw)
    with pytest.raises(DataError, match="max_bad_fraction"):
        run_split(strict, progress=False)
    assert len(pd.read_csv(strict.paths.reports / "quarantine.csv")) == 6


def test_manifest_names_the_engine_that_spoke_each_generated_clip(tmp_path):
    """A synthetic source's clips: `engine` is piper or kokoro for the speaker ids of its neural voices (the list
    the download stage generates with), espeak for every other speaker; split.json counts clips per engine."""
    from pipeline.data.neural import neural_voices
    from tests.conftest import speaker_id

    raw = tmp_path / "raw" / "synthetic"
    write_tone_corpus(raw, ["yes", "no", "cat", "dog"], speakers=20, reps=2)
    voices = neural_voices(3, seed=1)  # what a source with piper and kokoro_blends 3 speaks with, seed 1
    for i, voice in enumerate(voices):
        for word in ("yes", "no", "cat", "dog"):
            sf.write(raw / word / f"{voice.speaker_id}_nohash_0.wav", tone_clip(word, 50 + i, 0), 16000, subtype="PCM_16")
    source = {"kind": "synthetic", "name": "synthetic", "speakers": 20, "piper": True, "kokoro_blends": 3}
    params = make_params(tmp_path, sources=[source], data=WORDS, split={**SPLIT, "unknown_percentage": 100})
    manifest = run_split(params, progress=False).manifest
    engine = dict(zip(manifest["speaker"], manifest["engine"], strict=False))
    assert {engine[v.speaker_id] for v in voices} == {"piper", "kokoro"}
    assert all(engine[v.speaker_id] == v.engine for v in voices)
    assert {engine[speaker_id(s)] for s in range(20)} == {"espeak"}
    assert set(manifest.loc[manifest["label"] == "_silence_", "engine"]) == {""}
    summary = json.loads((params.paths.reports / "split.json").read_text())
    for name, counts in summary["sets"].items():
        assert counts["per_engine"] == manifest[manifest["set"] == name]["engine"].value_counts().sort_index().to_dict()
    assert sum(c["per_engine"].get("kokoro", 0) for c in summary["sets"].values()) == int((manifest["engine"] == "kokoro").sum()) > 0


def test_a_speaker_in_two_sets_fails_validation(tmp_path):
    """The same voice imported twice with different per-source salts would leak between sets."""
    corpus = write_tone_corpus(tmp_path / "corpus", ["yes", "no", "cat"], speakers=12, reps=1)
    sources = [
        {"kind": "local", "name": "a", "path": str(corpus)},
        {"kind": "local", "name": "b", "path": str(corpus), "split": {"salt": "other"}},
    ]
    params = make_params(tmp_path, sources=sources, data=WORDS, split=SPLIT)
    fetch_sources(params, progress=False)
    with pytest.raises(DataError, match="speaker"):
        run_split(params, progress=False)


def test_confusable_words_are_held_out_of_every_set_and_packed_for_the_testing_speakers(tmp_path):
    """data.confusable_words: the sets are exactly those of the same corpus without them; every testing speaker's
    clip of those words, and only those, is packed apart (streaming only), and every file keeps its fate."""
    from pipeline import artifacts
    from pipeline.evaluate.run import with_confusable_clips

    runs = {}
    for name, words, confusable in (("plain", ["yes", "no", "cat", "dog"], []),
                                    ("near", ["yes", "no", "cat", "dog", "so", "low"], ["so", "low", "cup"])):  # fmt: skip
        root = tmp_path / name
        write_tone_corpus(root / "corpus", words, speakers=20, reps=2)
        params = make_params(root, data={**WORDS, "confusable_words": confusable}, split=SPLIT)
        fetch_sources(params, progress=False)
        runs[name] = params, run_split(params, progress=False)
    (plain, first), (params, result) = runs["plain"], runs["near"]
    assert not {"so", "low"} & set(result.manifest["word"])
    pd.testing.assert_frame_equal(first.manifest, result.manifest)
    for name in ("training", "validation", "testing"):
        np.testing.assert_array_equal(np.load(plain.paths.split / f"{name}_audio.npy"), np.load(params.paths.split / f"{name}_audio.npy"))

    ledger = pd.read_csv(params.paths.reports / "files.csv").fillna("")
    near = ledger[ledger["path"].str.match(r"tones/(so|low)/")]
    held = near[near["status"] == "used"].sort_values("path")
    rest = near[near["status"] != "used"]
    assert len(near) == 80 and (held["set"] == "testing_confusable").all() and len(held) > 0
    assert (rest["status"] == "not_sampled").all() and set(rest["set"]) <= {"training", "validation"}  # no testing clip lost
    assert rest["reason"].str.contains("confusable word").all()
    speakers = {p.split("/")[-1].split("_")[0] for p in held["path"]}
    assert speakers <= set(result.manifest.loc[result.manifest["set"] == "testing", "speaker"])
    packed = np.load(artifacts.CONFUSABLE_AUDIO.path(params.paths))
    listed = pd.read_csv(artifacts.CONFUSABLE_CLIPS.path(params.paths))
    assert packed.shape == (len(held), 16000) and result.summary["sets"]["testing"]["confusable"] == len(held)
    assert listed["path"].tolist() == held["path"].tolist() and set(listed["word"]) == {"so", "low"}
    for row, path in enumerate(held["path"]):
        np.testing.assert_array_equal(packed[row], sf.read(params.paths.raw / path, dtype="int16")[0])

    # the non-keyword recording's pool: the testing clips, then per near-miss word as many clips as one other word
    # has ("cup" was never said: it adds none)
    clips = np.load(params.paths.split / "testing_audio.npy")
    targets = np.load(params.paths.split / "testing_labels.npy")
    pooled, labels, added = with_confusable_clips(params, clips, targets, seed=5)
    testing = result.manifest[(result.manifest["set"] == "testing") & (result.manifest["label"] == "_unknown_")]
    per_word = round(len(testing) / testing["word"].nunique())
    assert added == sum(min(per_word, int((listed["word"] == w).sum())) for w in ("so", "low")) > 0
    assert (labels[len(targets):] == 1).all() and np.array_equal(pooled[: len(clips)], clips)
    words = [listed["word"][next(i for i, p in enumerate(packed) if np.array_equal(clip, p))] for clip in pooled[len(clips):]]
    assert sorted(set(words)) == ["low", "so"] and abs(words.count("so") - words.count("low")) <= 1
    same = with_confusable_clips(plain, clips, targets, seed=5)
    assert same[0] is clips and same[2] == 0
