"""params.yaml → Params: defaults load, bad values are rejected with one line naming the key."""

from pathlib import Path

import pytest

from pipeline.config import load_params, parse_params
from pipeline.errors import ConfigError
from tests.conftest import REPO


def test_repository_params_load_with_yaml_words_kept_as_words():
    params = load_params(REPO / "params.yaml")
    assert params.data.keywords == ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    assert params.labels[:3] == ["_silence_", "_unknown_", "yes"]
    assert len(params.labels) == 12
    assert params.features.frames == 98
    assert params.data.sources[0].kind == "synthetic"
    assert "so" in params.data.confusable_words and "so" not in params.data.unknown_words


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "bogus": 1}, "bogus: Extra inputs"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic", "speakers": "many"}]}}, "data.sources.0.speakers"),
        ({"seed": 1, "data": {"sources": [{"kind": "ftp"}]}}, "data.sources.0"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic", "kokoro_male_share": 1.0}]}}, "data.sources.0.kokoro_male_share"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "freeze": {"calibration_draws": 0}}, "freeze.calibration_draws"),
        ({"seed": 1, "data": {"sources": []}}, "data.sources"),
        ({"seed": 1, "data": {"sources": [{"kind": "url", "url": "file:///x"}]}}, "data.sources.0.url"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "split": {"testing_percentage": 120}}, "split.testing_percentage"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}, {"kind": "synthetic"}]}}, "unique"),
        ({"seed": 1, "data": {"keywords": ["yes", "Yes!"], "sources": [{"kind": "synthetic"}]}}, "data.keywords"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "features": {"window_size_ms": 2000}}, "window_size_ms"),
        ({"data": {"sources": [{"kind": "synthetic"}]}}, "seed: Field required"),
        # the value is shown even where the bound's digits appear in the message ("greater than 0 (got 0)")
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "features": {"embedding": {"finetune": {"learning_rate": 0}}}},
         "features.embedding.finetune.learning_rate: Input should be greater than 0 (got 0)"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "freeze": {"calibration_draws": 0}}, "(got 0)"),
    ],
)
def test_invalid_params_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"features": {"background_volume": True}}, "features.background_volume: expected a number, not true/false (got True)"),
        ({"train": {"ema_momentum": True}}, "train.ema_momentum: expected a number, not true/false"),
        ({"train": {"steps": ["2000", 500]}}, "train.steps: expected a number, not a quoted string"),
        ({"seed": "5"}, "seed: expected a number, not a quoted string (got '5')"),
        ({"train": {"ema_momentum": "abc"}}, "train.ema_momentum: expected a number, not text (got 'abc')"),  # no quotes needed
        ({"features": {"embedding": {"integer_views": "true"}}}, "features.embedding.integer_views: expected true or false (got 'true')"),
        ({"evaluate": {"extra_sets": [{"name": "x", "path": "y", "streaming": 1}]}}, "evaluate.extra_sets.0.streaming: expected true or false (got 1)"),
        ({"data": {"sources": [{"kind": "synthetic", "piper": 1}]}}, "data.sources.0.piper: expected true or false (got 1)"),
    ],
)
def test_values_of_the_wrong_yaml_type_are_rejected_not_converted(section, expected):
    # pydantic's lax mode would read `true` as 1.0, `1` as true and "0.5" as 0.5 without a word
    raw = {"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, **section}
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert str(info.value).startswith(f"params.yaml: {expected}") and "\n" not in str(info.value)


def test_numbers_stay_numbers_of_either_kind():
    raw = {"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "train": {"learning_rate": [1, 0.1], "ema_momentum": None},
           "features": {"background_volume": 0}}  # fmt: skip
    params = parse_params(raw)
    assert params.train.learning_rate == [1.0, 0.1] and params.features.background_volume == 0.0


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="Instance is frozen"):
        params.seed = 3  # type: ignore[misc]
    assert params.seed == load_params(REPO / "params.yaml").seed


SYNTH = {"sources": [{"kind": "synthetic"}]}


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        # fault 4 of issue 14: 3 s clips crashed the features stage with (48,28,96) into (48,16,96)
        ({"features": {"preprocess": "speech_embedding", "clip_duration_ms": 3000}},
         "features.clip_duration_ms (3000) must not exceed features.embedding.pad_to_ms (2000)"),
        # fault 5: no validation set crashed training with 'need at least one array to concatenate'
        ({"split": {"validation_percentage": 0, "min_class_count": 0}},
         "split.validation_percentage is 0 and no source's split gives validation clips"),
        ({"split": {"testing_percentage": 0}}, "split.testing_percentage is 0 and no source's split gives testing clips"),
        ({"data": {"sources": [{"kind": "synthetic", "split": {"validation_percentage": 60, "testing_percentage": 40}}]}},
         "data.sources.0.split: validation + testing percentages (60 + 40) must be below 100"),
        ({"data": {"sources": [{"kind": "synthetic", "split": {"validation_percentage": 92}}]}},
         "data.sources.0.split: validation + testing percentages (92 + 10) must be below 100"),
        ({"features": {"time_shift_ms": 1000}}, "features.time_shift_ms (1000) must be below features.clip_duration_ms (1000)"),
        ({"features": {"preprocess": "mfcc", "spec_augment": {"enabled": True, "frequency_mask_bins": 41}}},
         "frequency_mask_bins (41) must fit the features (98 frames x 40 bins)"),
        ({"data": {"unknown_words": [], **SYNTH}}, "data.unknown_words is empty but every source is synthetic"),
        ({"data": {"confusable_words": ["so", "no"], **SYNTH}}, "words in both keywords and confusable_words: ['no']"),
        ({"data": {"confusable_words": ["cat"], **SYNTH}}, "words in both unknown_words and confusable_words: ['cat']"),
        ({"data": {"confusable_words": ["so", "so"], **SYNTH}}, "words must not repeat"),
        ({"evaluate": {"streaming": {"word_interval_ms": 1500, "word_jitter_ms": 400}}},
         "evaluate.streaming.word_interval_ms (1500) must be at least features.clip_duration_ms (1000) plus twice word_jitter_ms (400)"),
        ({"evaluate": {"streaming": {"recording_seconds": 1}}}, "recording_seconds must hold at least one word_interval_ms"),
        ({"train": {"model": {"name": "embedding_head"}}, "features": {"preprocess": "mfcc"}},
         "train.model embedding_head needs features.preprocess speech_embedding"),
        ({"features": {"preprocess": "speech_embedding", "embedding": {"integer_views": True, "view_context": "noise"}}},
         "features.embedding: integer_views needs view_context: silence"),
        ({"features": {"preprocess": "log_mel", "embedding": {"finetune": {"convs": 9}}}},
         "features.embedding.finetune.convs (9) needs features.preprocess speech_embedding, not log_mel: set it to 0"),
        ({"features": {"preprocess": "speech_embedding", "embedding": {"finetune": {"convs": 20}}}},
         "features.embedding.finetune.convs: Input should be less than or equal to 19"),
        # a synthetic source without piper or Kokoro blends has no neural voice to oversample, nor has a local one
        ({"train": {"neural_repeats": 4}}, "train.neural_repeats is 4 but no data.sources entry has neural voices"),
        ({"train": {"neural_repeats": 2}, "data": {"sources": [{"kind": "local", "name": "mine", "path": "x"}]}},
         "train.neural_repeats is 2 but no data.sources entry has neural voices"),
    ],
)
def test_cross_field_rules_are_checked_before_any_work(sections, expected):
    raw = {"seed": 1, "data": dict(SYNTH), **sections}
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    assert expected in str(info.value) and str(info.value).startswith("params.yaml: ")
    assert "<root>" not in str(info.value) and "Value error" not in str(info.value), "the rule's own words, no pydantic prefix"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "sections",
    [
        # a source of its own gives the validation clips the global rule does not
        {"split": {"validation_percentage": 0},
         "data": {"sources": [{"kind": "synthetic", "split": {"validation_percentage": 20}}]}},
        # a whole-testing source supplies testing clips
        {"split": {"testing_percentage": 0},
         "data": {"sources": [{"kind": "synthetic"}, {"kind": "local", "name": "real", "path": "x", "split": {"assign": "testing"}}]}},
        {"features": {"preprocess": "speech_embedding", "clip_duration_ms": 1500},
         "evaluate": {"streaming": {"word_jitter_ms": 200}}},
        {"data": {"unknown_words": [], "sources": [{"kind": "local", "name": "mine", "path": "x"}]}},
        {"train": {"neural_repeats": 10}, "data": {"sources": [{"kind": "synthetic", "kokoro_blends": 2}]}},
        {"train": {"neural_repeats": 10}, "data": {"sources": [{"kind": "synthetic", "piper": True}]}},
    ],
)
def test_cross_field_rules_accept_what_works(sections):
    parse_params({"seed": 1, "data": dict(SYNTH), **sections})


def test_paths_beside_the_project_are_found_from_a_dvc_experiment_copy(tmp_path: Path, monkeypatch):
    """`dvc exp run --temp` / `--queue` run the stages in <project>/.dvc/tmp/exps/...: `../shared/data` there
    meant the folder beside the project, and the optional real sets were skipped without it (no real_dev figures)."""
    from pipeline.config import project_path

    project, shared = tmp_path / "project", tmp_path / "shared" / "data"
    copy = project / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    for folder in (shared / "_background_noise_", project / ".dvc", copy / ".dvc", copy / "local"):
        folder.mkdir(parents=True)
    beside = Path("../shared/data")
    assert project_path(beside, cwd=copy) == shared
    assert project_path(beside / "_background_noise_", cwd=copy) == shared / "_background_noise_"
    assert project_path(beside, cwd=project) == beside  # the project itself: read as written
    assert project_path(Path("local"), cwd=copy) == Path("local")  # found in the copy: the copy's own
    assert project_path(Path("../missing"), cwd=copy) == Path("../missing")  # nowhere: left to the stage's error
    assert project_path(Path("../shared/data"), cwd=tmp_path / "elsewhere") == beside
    assert project_path(shared, cwd=copy) == shared

    monkeypatch.chdir(copy)
    raw = {"seed": 1,
           "data": {"sources": [{"kind": "local", "name": "real", "path": "../shared/data",
                                 "background_noise": "../shared/data/_background_noise_"}]},
           "evaluate": {"extra_sets": [{"name": "real_dev", "path": "../shared/data"}],
                        "speech_free_sets": [{"name": "noise", "path": "../shared/data/_background_noise_"}]}}  # fmt: skip
    params = parse_params(raw)
    assert params.data.sources[0].path == shared
    assert params.data.sources[0].background_noise == shared / "_background_noise_"
    assert params.evaluate.extra_sets[0].path == shared
    assert params.evaluate.speech_free_sets[0].path == shared / "_background_noise_"
