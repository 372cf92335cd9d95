"""TensorFlow's which_set rule, reproduced exactly, plus the per-source variants."""

import pytest

from pipeline.config import SourceSplit
from pipeline.data.layout import parse_clip
from pipeline.data.split import assign_set, hash_percentage, which_set


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("zero/105e72bb_nohash_0.wav", "validation"),
        ("no/edc53350_nohash_0.wav", "validation"),
        ("four/bb05582b_nohash_1.wav", "testing"),
        ("eight/8494fba8_nohash_0.wav", "testing"),
        ("off/e3e49931_nohash_1.wav", "training"),
        ("marvin/c103a2d5_nohash_0.wav", "training"),
    ],
)
def test_official_v002_vectors(path, expected):
    assert which_set(path, 10, 10) == expected


def test_all_clips_of_a_speaker_land_together():
    for speaker in ("105e72bb", "bb05582b", "e3e49931", "0c540988"):
        sets = {which_set(f"{w}/{speaker}_nohash_{n}.wav", 10, 10) for w in ("yes", "no", "cat") for n in range(4)}
        assert len(sets) == 1


def test_test_set_layout_recovers_word_and_name():
    clip = parse_clip("_unknown_/backward_0c540988_nohash_0.wav.wav")
    assert (clip.word, clip.name, clip.speaker, clip.repetition) == ("backward", "0c540988_nohash_0.wav", "0c540988", 0)
    assert which_set("_unknown_/backward_0c540988_nohash_0.wav.wav", 10, 10) == which_set("backward/0c540988_nohash_0.wav", 10, 10)


def test_percentages_move_the_boundaries():
    """The clip's hash percentage is 0.3318...: validation iff below validation_percentage, then testing iff below
    validation + testing, else training."""
    path = "yes/105e72bb_nohash_0.wav"
    p = hash_percentage(path)
    assert p == pytest.approx(0.3318235302852357, abs=1e-12)
    assert which_set(path, 0, 0) == "training"
    assert which_set(path, p + 1e-6, 0) == "validation"
    assert which_set(path, p - 1e-6, 0) == "training"
    assert which_set(path, p - 1e-6, 2e-6) == "testing"
    assert which_set(path, 0, 100 - 1e-9) == "testing"


def test_source_rules_salt_and_wholly_testing():
    names = [f"{i:08x}_nohash_0.wav" for i in range(400)]
    default = [assign_set(n, SourceSplit(), 10, 10) for n in names]
    assert default == [which_set(n, 10, 10) for n in names]
    salted = [assign_set(n, SourceSplit(salt="real"), 10, 10) for n in names]
    assert salted != default
    assert 0.75 < salted.count("training") / len(names) < 0.9
    assert {assign_set(n, SourceSplit(assign="testing"), 10, 10) for n in names} == {"testing"}
    wide = [assign_set(n, SourceSplit(validation_percentage=30, testing_percentage=30), 10, 10) for n in names]
    assert 0.3 < wide.count("training") / len(names) < 0.5
