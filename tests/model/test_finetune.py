"""The finetune stage (features.embedding.finetune): tuned convolutions written once, loaded by every feature layer,
the same weights after an interrupted run resumes, and one-line errors for a file that does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import artifacts
from pipeline.data.sources import fetch_sources
from pipeline.data.split import run_split
from pipeline.errors import DataError
from pipeline.features.embedding import SpeechEmbedding, compute_embeddings, read_tuned
from pipeline.features.finetune import run_finetune
from pipeline.features.layers import extract, feature_layer
from tests.conftest import make_params, tiny_params_dict, write_tone_corpus

pytestmark = pytest.mark.slow
FINETUNE = {"convs": 2, "head_steps": 20, "steps": 6, "checkpoint_every": 3}


def _params(root, **finetune):
    from pipeline.config import parse_params

    raw = tiny_params_dict(root, features={"preprocess": "speech_embedding", "embedding": {"finetune": {**FINETUNE, **finetune}}},
                           train={"model": {"name": "embedding_head"}, "batch_size": 8})  # fmt: skip
    raw["paths"]["backbone"] = str(root / "backbone")
    return parse_params(raw)


@pytest.fixture(scope="module")
def split_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    write_tone_corpus(root / "corpus", ["yes", "no", "cat", "dog"], speakers=6, reps=1, noise_seconds=5)
    params = _params(root)
    fetch_sources(params, progress=False)
    run_split(params, progress=False)
    return root


@pytest.fixture(scope="module")
def tuned(split_root):
    params = _params(split_root)
    report = run_finetune(params)
    with np.load(artifacts.BACKBONE.path(params.paths)) as saved:
        arrays = {k: saved[k] for k in saved.files}
    return params, report, arrays


def test_the_last_convolutions_are_tuned_and_written_with_the_report(tuned) -> None:
    params, report, arrays = tuned
    assert sorted(arrays) == ["conv_18/bias", "conv_18/kernel", "conv_19/kernel", "convs"]  # the last conv has no bias
    assert arrays["convs"] == 2
    pretrained = SpeechEmbedding()
    pretrained.build()
    assert not np.allclose(arrays["conv_19/kernel"], pretrained.convs[19].get_weights()[0])
    np.testing.assert_array_equal(arrays["conv_18/kernel"].shape, pretrained.convs[18].get_weights()[0].shape)
    written = json.loads(artifacts.FINETUNE_REPORT.path(params.paths).read_text())
    assert written["convs"] == 2 and written["tuned_weights"] == sum(a.size for k, a in arrays.items() if k != "convs")
    assert [(h["phase"], h["step"]) for h in written["history"]] == [("head", 20), ("backbone", 3), ("backbone", 6)]
    assert written["loss"] == written["history"][-1]["loss"] and written["seconds"] == written["history"][-1]["seconds"]
    assert not (params.paths.checkpoints / "finetune").exists() or not any((params.paths.checkpoints / "finetune").iterdir())


def test_every_feature_layer_embeds_with_the_tuned_weights(tuned) -> None:
    params, _, _ = tuned
    clips = np.load(artifacts.SET_AUDIO.path(params.paths, set="validation"))[:3]
    precomputed = extract(clips, params.features)
    layer = feature_layer(params.features)
    np.testing.assert_allclose(layer(clips.astype(np.float32) / 32768.0).numpy(), precomputed, atol=1e-4)
    assert np.abs(precomputed - compute_embeddings(clips)).max() > 0.1  # not the pretrained backbone


def test_an_interrupted_run_resumes_to_the_same_weights(split_root, tuned, monkeypatch, tmp_path, caplog) -> None:
    from pipeline.train.checkpoint import Checkpoints

    _, _, reference = tuned
    params = _params(split_root)
    params = params.model_copy(update={"paths": params.paths.model_copy(update={"backbone": tmp_path / "bb"})})
    save = Checkpoints.save

    def save_then_die(self, step, *args):
        path = save(self, step, *args)
        if step == 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(params)
    assert not artifacts.BACKBONE.path(params.paths).exists()
    monkeypatch.setattr(Checkpoints, "save", save)
    # meanwhile a features key this stage does not read changed (the features stage's views): the checkpoint holds
    embedding = params.features.embedding.model_copy(update={"views": 5, "integer_views": True})
    params = params.model_copy(update={"features": params.features.model_copy(update={"embedding": embedding})})
    with caplog.at_level("INFO", logger="pipeline"):
        report = run_finetune(params)
    assert "finetune: resumed at step 3 of 6" in caplog.text  # not a restart (which would give the same weights)
    assert "finetune: step 6 of 6, loss" in caplog.text and "step 3 of 6, loss" not in caplog.text  # each checkpoint
    # the reported seconds cover the interrupted part too: not less than the first run had spent by its checkpoint
    assert report["seconds"] >= report["history"][1]["seconds"] >= report["history"][0]["seconds"] > 0
    with np.load(artifacts.BACKBONE.path(params.paths)) as saved:
        for name, value in reference.items():
            np.testing.assert_array_equal(saved[name], value)
    assert [h["step"] for h in report["history"]] == [20, 3, 6]


def test_off_writes_an_empty_file_and_the_pretrained_backbone_is_used(tmp_path) -> None:
    params = make_params(tmp_path, paths={"backbone": str(tmp_path / "bb")}, features={"preprocess": "speech_embedding"},
                         train={"model": {"name": "embedding_head"}})  # fmt: skip
    assert run_finetune(params) == {"convs": 0}
    with np.load(artifacts.BACKBONE.path(params.paths)) as saved:
        assert saved.files == ["convs"] and saved["convs"] == 0
    assert params.features.embedding.backbone_file is None


def test_a_weights_file_of_other_params_is_refused_not_used(split_root, tuned, tmp_path) -> None:
    """Fault: the weightless file of `convs: 0` (or one of another count) was loaded silently as the tuned backbone."""
    other = _params(split_root, convs=3)  # the same paths: the file holds the last 2 convolutions
    message = r"backbone.npz: holds the last 2 convolutions tuned, features.embedding.finetune.convs is 3; rerun the finetune stage$"
    with pytest.raises(DataError, match=message):
        feature_layer(other.features)
    with pytest.raises(DataError, match=message):
        extract(np.zeros((1, 16000), np.int16), other.features)
    off = make_params(tmp_path, paths={"backbone": str(tmp_path / "bb")}, features={"preprocess": "speech_embedding"},
                      train={"model": {"name": "embedding_head"}})  # fmt: skip
    run_finetune(off)
    with pytest.raises(DataError, match="holds the last 0 convolutions tuned, features.embedding.finetune.convs is 2"):
        read_tuned(artifacts.BACKBONE.path(off.paths), _convs(), expect=2)


def _convs():
    layer = SpeechEmbedding()
    layer.build()
    return layer.convs


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"conv_19/kernel": np.zeros((3, 3, 96, 96), np.float32)}, r"conv_19/kernel has shape \(3, 3, 96, 96\), the backbone's is \(3, 1, 96, 96\)"),
        ({"conv_18/kernel": np.zeros((1, 3, 96, 96), np.float32)}, "holds conv_18/kernel but not conv_18/bias"),
        ({"conv_20/kernel": np.zeros((1,), np.float32)}, "conv_20/kernel is no weight of the speech embedding's 20 convolutions"),
        ({"conv_18/kernel": np.zeros((3, 1, 96, 96), np.float32), "conv_18/bias": np.zeros(96, np.float32), "convs": 2},
         "says its last 2 convolutions are tuned but has no weights for conv_19"),
        ({"conv_19/kernel": np.zeros((3, 1, 96, 96), np.float32), "convs": 0}, "says its last 0 convolutions are tuned but has weights for conv_19"),
        ({"conv_19/kernel": np.zeros((3, 1, 96, 96), np.float32), "convs": 21}, r"no finetune stage file \(expected an integer `convs` entry in 0..20\)"),
    ],
)  # fmt: skip
def test_a_weights_file_that_does_not_fit_the_backbone_is_one_line_naming_it(tmp_path, arrays, message) -> None:
    path = tmp_path / "backbone.npz"
    np.savez(path, **{"convs": np.asarray(1, np.int64), **arrays})
    with pytest.raises(DataError, match=message):
        read_tuned(path, _convs())


def test_a_missing_or_corrupt_weights_file_says_which_stage_writes_it(tmp_path) -> None:
    with pytest.raises(DataError, match=r"backbone.npz: not found; run the finetune stage first"):
        read_tuned(tmp_path / "backbone.npz", _convs())
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match=r"bad.npz: unreadable fine-tuned backbone"):
        read_tuned(tmp_path / "bad.npz", _convs())
    with open(tmp_path / "array.npz", "wb") as handle:  # fault: a plain .npy under the name gave a traceback
        np.save(handle, np.zeros((3, 1, 96, 96), np.float32))
    with pytest.raises(DataError, match=r"array.npz: one array, not the finetune stage's .npz of named weights"):
        read_tuned(tmp_path / "array.npz", _convs())
    np.savez(tmp_path / "old.npz", **{"conv_19/kernel": np.zeros((3, 1, 96, 96), np.float32)})
    with pytest.raises(DataError, match=r"old.npz: no finetune stage file \(expected an integer `convs` entry"):
        read_tuned(tmp_path / "old.npz", _convs())
