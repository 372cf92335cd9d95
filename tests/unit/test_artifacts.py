"""Artifact paths come from params.yaml's `paths:`; a missing input names the file and the stage to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import artifacts
from pipeline.config import Paths
from pipeline.errors import DataError


def test_paths_follow_the_paths_section_and_fill_placeholders(tmp_path):
    paths = Paths(model=tmp_path / "m", reports=tmp_path / "r", export=tmp_path / "e")
    assert artifacts.MODEL.path(paths) == tmp_path / "m" / "model.keras"
    assert artifacts.CONFUSION_CSV.path(paths, set="real_dev") == tmp_path / "r" / "evaluate" / "confusion_real_dev.csv"
    assert artifacts.TFLITE.path(paths, mode="int8") == tmp_path / "e" / "model_int8.tflite"
    assert artifacts.SET_AUDIO.fields == ["set"] and artifacts.MODEL.fields == []
    with pytest.raises(KeyError):
        artifacts.TFLITE.path(paths)


def test_require_names_the_missing_file_and_the_stage_that_writes_it(tmp_path):
    paths = Paths(model=tmp_path / "m")
    with pytest.raises(DataError, match=r"m/run_id.txt: not found; run the train stage first$"):
        artifacts.RUN_ID.require(paths)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "run_id.txt").write_text("abc\n")
    assert artifacts.RUN_ID.require(paths) == tmp_path / "m" / "run_id.txt"
    with pytest.raises(DataError, match="x.npy: not found; run the split stage first"):
        artifacts.require(Path(tmp_path / "x.npy"), "split")


def test_each_artifact_is_declared_once_with_a_known_stage_and_root():
    stages = {"split", "finetune", "features", "train", "evaluate", "freeze"}
    assert {a.stage for a in artifacts.ARTIFACTS.values()} == stages
    assert all(a.root in Paths.model_fields for a in artifacts.ARTIFACTS.values())
    keys = [(a.root, a.name) for a in artifacts.ARTIFACTS.values()]
    assert len(keys) == len(set(keys))
    assert [a.name for a in artifacts.written_by("train")][:2] == ["model.keras", "history.json"]


def test_the_tuned_backbone_that_params_point_every_feature_layer_at_is_the_finetune_stage_artifact(tmp_path):
    """config names the file without importing artifacts (check and download would then depend on it): same path."""
    from tests.conftest import make_params

    on = make_params(tmp_path, paths={"backbone": str(tmp_path / "bb")}, features={"preprocess": "speech_embedding",
                     "embedding": {"finetune": {"convs": 3}}}, train={"model": {"name": "embedding_head"}})  # fmt: skip
    assert on.features.embedding.backbone_file == artifacts.BACKBONE.path(on.paths).absolute()
    off = make_params(tmp_path, paths={"backbone": str(tmp_path / "bb")})
    assert off.features.embedding.backbone_file is None
