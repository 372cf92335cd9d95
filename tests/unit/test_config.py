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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "bogus": 1}, "bogus: Extra inputs"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic", "speakers": "many"}]}}, "data.sources.0.speakers"),
        ({"seed": 1, "data": {"sources": [{"kind": "ftp"}]}}, "data.sources.0"),
        ({"seed": 1, "data": {"sources": []}}, "data.sources"),
        ({"seed": 1, "data": {"sources": [{"kind": "url", "url": "file:///x"}]}}, "data.sources.0.url"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "split": {"testing_percentage": 120}}, "split.testing_percentage"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}, {"kind": "synthetic"}]}}, "unique"),
        ({"seed": 1, "data": {"keywords": ["yes", "Yes!"], "sources": [{"kind": "synthetic"}]}}, "data.keywords"),
        ({"seed": 1, "data": {"sources": [{"kind": "synthetic"}]}, "features": {"window_size_ms": 2000}}, "window_size_ms"),
        ({"data": {"sources": [{"kind": "synthetic"}]}}, "seed: Field required"),
    ],
)
def test_invalid_params_give_one_line_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


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
