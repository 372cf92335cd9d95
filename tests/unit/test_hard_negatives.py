"""train.hard_negatives: which stream windows are mined, and the two-round training that uses them (resumable)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import pipeline.train.loop as loop
from pipeline.errors import ConfigError
from pipeline.train.hard_negatives import recording_seconds, select
from tests.conftest import make_params, write_head_inputs

LABELS = ["_silence_", "_unknown_", "yes", "no"]
EMBEDDING = {"preprocess": "speech_embedding"}
STEPS, SAVE_EVERY, CLIPS = 8, 3, 36


def _scores(top: list[int], value: list[float]) -> np.ndarray:
    """Softmax-like rows: `value` on class `top`, the rest shared by the other classes."""
    rows = np.array([[(1 - v) / (len(LABELS) - 1)] * len(LABELS) for v in value])
    rows[np.arange(len(top)), top] = value
    return rows


def test_a_window_is_a_hard_negative_when_a_keyword_fires_far_from_every_keyword(tmp_path):
    params = make_params(tmp_path, data={"keywords": ["yes", "no"]}, features=EMBEDDING,
                         train={"hard_negatives": {"hours": 1, "min_score": 0.7, "exclude_ms": 1200, "unknown_within_ms": 600}})  # fmt: skip
    truth = pd.DataFrame({"label": ["yes", "_unknown_"], "time_ms": [1500.0, 5500.0]})  # centres 1,000 and 5,000 ms
    centres = np.array([1000.0, 2500.0, 4900.0, 8000.0, 8000.0, 2100.0])
    scores = _scores([2, 3, 2, 3, 1, 3], [0.9, 0.95, 0.8, 0.6, 0.99, 0.9])
    rows, labels = select(scores, centres, truth, LABELS, params)
    # 0: on the keyword; 3: below min_score; 4: the top class is _unknown_; 5: 1,100 ms from the keyword (< 1,200)
    assert rows.tolist() == [1, 2]
    assert [LABELS[i] for i in labels] == ["_silence_", "_unknown_"]  # 2,500 ms from the other word / 100 ms


def test_a_recording_without_keywords_leaves_every_confident_window_a_negative(tmp_path):
    params = make_params(tmp_path, data={"keywords": ["yes", "no"]}, features=EMBEDDING, train={"hard_negatives": {"hours": 1}})
    truth = pd.DataFrame({"label": ["_unknown_"], "time_ms": [1500.0]})
    rows, labels = select(_scores([2, 3], [0.9, 0.9]), np.array([1000.0, 9000.0]), truth, LABELS, params)
    assert rows.tolist() == [0, 1] and [LABELS[i] for i in labels] == ["_unknown_", "_silence_"]


def test_hours_become_recordings_of_at_most_an_hour():
    assert recording_seconds(2) == [3600.0, 3600.0]
    assert recording_seconds(2.5) == [3000.0, 3000.0, 3000.0]
    assert recording_seconds(0.02) == pytest.approx([72.0])
    assert recording_seconds(0) == []


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"features": {"preprocess": "mfcc"}, "train": {"hard_negatives": {"hours": 2}}},
         "train.hard_negatives.hours (2) needs features.preprocess speech_embedding"),
        ({"features": EMBEDDING, "train": {"hard_negatives": {"hours": 0.0001}}}, "train.hard_negatives.hours (0.0001) must hold at least one"),
        ({"features": EMBEDDING, "train": {"hard_negatives": {"hours": 1, "min_score": 1.5}}}, "min_score"),
    ],
)
def test_bad_hard_negative_settings_are_rejected_before_any_work(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_params(tmp_path, **sections)


def _params(tmp_path, hours: float = 0.02):
    train = {"steps": [STEPS], "learning_rate": [0.01], "batch_size": 8, "eval_step_interval": 4,
             "save_step_interval": SAVE_EVERY, "hard_negatives": {"hours": hours, "min_score": 0.01, "exclude_ms": 0},
             "model": {"name": "embedding_head", "head": "conv", "filters": 8, "dropout": 0.2, "l2": 0.0}}  # fmt: skip
    return make_params(tmp_path, features={"preprocess": "speech_embedding", "embedding": {"views": 2}}, train=train)


class Interrupted(Exception):
    pass


def _train(params, root, monkeypatch, stop_after: int | None = None):
    """train() whose make_step raises at global step `stop_after`, as a killed process would; counts the steps run."""
    calls, real_make_step = [], loop.make_step

    def counting_make_step(*args, **kwargs):
        step_fn = real_make_step(*args, **kwargs)

        def run(inputs, y, step):
            if stop_after is not None and len(calls) + resumed[0] == stop_after:
                raise Interrupted
            calls.append(int(step))
            return step_fn(inputs, y, step)

        return run

    resumed = [0]
    real_restore = loop.Checkpoints.restore

    def noting_restore(self, model, optimizer):
        state = real_restore(self, model, optimizer)
        resumed[0] = state.step
        return state

    monkeypatch.setattr(loop, "make_step", counting_make_step)
    monkeypatch.setattr(loop.Checkpoints, "restore", noting_restore)
    return loop.train(params, root / "ckpt", root / "logs"), calls


def test_two_rounds_train_a_new_head_on_the_mined_windows(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    params = _params(tmp_path)
    write_head_inputs(params, CLIPS)
    result, calls = _train(params, tmp_path, monkeypatch)
    assert result.steps == 2 * STEPS and calls == list(range(STEPS)) * 2, "each round runs the schedule from its step 0"
    assert [h["step"] for h in result.history] == [4, 8, 12, 16]
    assert result.hard_negatives is not None and sum(result.hard_negatives.values()) > 0
    assert set(result.hard_negatives) == {"_unknown_", "_silence_"}
    saved = result.checkpoints.load_arrays(loop.HARD_NEGATIVES)
    assert saved["windows"].shape[1:] == params.features.feature_shape
    assert len(saved["windows"]) == len(saved["labels"]) == sum(result.hard_negatives.values())
    assert set(saved["labels"].tolist()) <= {0, 1}, "mined windows are _silence_ or _unknown_"


def test_a_run_interrupted_in_the_second_round_resumes_to_the_same_model(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    whole_root, parts_root = tmp_path / "whole", tmp_path / "parts"
    params = _params(whole_root)
    write_head_inputs(params, CLIPS)
    whole, _ = _train(params, whole_root, monkeypatch)

    params = _params(parts_root)
    write_head_inputs(params, CLIPS)
    with pytest.raises(Interrupted):
        _train(params, parts_root, monkeypatch, stop_after=STEPS + 5)  # the checkpoint of step 12 survives
    resumed, calls = _train(params, parts_root, monkeypatch)
    assert resumed.resumed_from == 4 * SAVE_EVERY and calls == list(range(4, STEPS))
    assert resumed.hard_negatives == whole.hard_negatives
    for got, want in zip(resumed.model.variables, whole.model.variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_lost_mined_windows_restart_training_from_step_0_with_a_warning(tmp_path, monkeypatch, caplog):
    pytest.importorskip("tensorflow")
    params = _params(tmp_path)
    write_head_inputs(params, CLIPS)
    with pytest.raises(Interrupted):
        _train(params, tmp_path, monkeypatch, stop_after=STEPS + 5)
    (folder,) = (tmp_path / "ckpt").iterdir()
    (folder / f"{loop.HARD_NEGATIVES}.npz").write_bytes(b"not a zip")
    with caplog.at_level("WARNING"):
        result, calls = _train(params, tmp_path, monkeypatch)
    assert "hard negatives of the second round are missing or unreadable; training from step 0" in caplog.text
    assert result.resumed_from == 0 and calls == list(range(STEPS)) * 2


def test_the_first_round_ends_at_the_model_a_run_without_hard_negatives_trains(tmp_path, monkeypatch):
    """Making the recordings does not move the head's initial weights: round 1 is the one-round run, so a paired
    comparison (hours 0 vs hours > 0) differs by the second round only."""
    pytest.importorskip("tensorflow")
    import pipeline.train.hard_negatives as hard_negatives

    plain_root, mined_root = tmp_path / "plain", tmp_path / "mined"
    params = _params(plain_root, hours=0)
    write_head_inputs(params, CLIPS)
    plain, _ = _train(params, plain_root, monkeypatch)
    assert plain.steps == STEPS and plain.hard_negatives is None

    first_round, real_mine = [], hard_negatives.mine

    def recording_mine(model, recordings, params, **kwargs):
        first_round.extend(v.numpy().copy() for v in model.variables)
        return real_mine(model, recordings, params, **kwargs)

    monkeypatch.setattr(hard_negatives, "mine", recording_mine)
    params = _params(mined_root)
    write_head_inputs(params, CLIPS)
    _train(params, mined_root, monkeypatch)
    assert len(first_round) == len(plain.model.variables)
    for got, want in zip(first_round, plain.model.variables, strict=True):
        np.testing.assert_array_equal(got, want.numpy())
