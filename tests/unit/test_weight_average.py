"""train.ema_momentum: the trained model holds the moving average of its weights, also after a resume."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.train.loop as loop
from pipeline.train.loop import make_step
from tests.conftest import make_params, write_head_inputs

STEPS, SAVE_EVERY, MOMENTUM, CLIPS = 12, 4, 0.8, 24


def _params(tmp_path, ema):
    train = {"steps": [STEPS], "learning_rate": [0.01], "batch_size": 8, "eval_step_interval": STEPS,
             "save_step_interval": SAVE_EVERY, "ema_momentum": ema,
             "model": {"name": "embedding_head", "head": "conv", "filters": 8, "dropout": 0.0, "l2": 0.0}}  # fmt: skip
    return make_params(tmp_path, features={"preprocess": "speech_embedding", "embedding": {"views": 2}}, train=train)


class Interrupted(Exception):
    pass


def _train(params, tmp_path, monkeypatch, stop_after: int | None = None):
    """train() with every step's raw weights recorded; `stop_after` steps raise as a killed process would."""
    trajectory, real_make_step = [], make_step

    def recording_make_step(params, model, optimizer, noise, precomputed):
        step_fn = real_make_step(params, model, optimizer, noise, precomputed)

        def run(inputs, y, step):
            if stop_after is not None and int(step) == stop_after:
                raise Interrupted
            out = step_fn(inputs, y, step)
            trajectory.append([w.numpy().copy() for w in model.trainable_variables])
            return out

        return run

    monkeypatch.setattr(loop, "make_step", recording_make_step)
    result = loop.train(params, tmp_path / "ckpt", tmp_path / "logs")
    return result, trajectory


def test_the_model_ends_as_the_moving_average_of_its_weights(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    params = _params(tmp_path, MOMENTUM)
    write_head_inputs(params, CLIPS)
    result, trajectory = _train(params, tmp_path, monkeypatch)
    assert len(trajectory) == STEPS
    average = [w.copy() for w in trajectory[0]]  # Keras starts the average at the first step's weights
    for weights in trajectory[1:]:
        average = [MOMENTUM * a + (1 - MOMENTUM) * w for a, w in zip(average, weights, strict=True)]
    final = [w.numpy() for w in result.model.trainable_variables]
    for got, want, last in zip(final, average, trajectory[-1], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, last), "the last step's weights, not their average"


def test_an_interrupted_run_resumes_to_the_same_average(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    whole_dir, parts_dir = tmp_path / "whole", tmp_path / "parts"
    params = _params(whole_dir, MOMENTUM)
    write_head_inputs(params, CLIPS)
    whole, _ = _train(params, whole_dir, monkeypatch)

    params = _params(parts_dir, MOMENTUM)
    write_head_inputs(params, CLIPS)
    with pytest.raises(Interrupted):
        _train(params, parts_dir, monkeypatch, stop_after=SAVE_EVERY + 2)  # the checkpoint of step 4 survives
    resumed, steps_after = _train(params, parts_dir, monkeypatch)
    assert resumed.resumed_from == SAVE_EVERY and len(steps_after) == STEPS - SAVE_EVERY
    for got, want in zip(resumed.model.trainable_variables, whole.model.trainable_variables, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert resumed.history[-1]["validation_accuracy"] == whole.history[-1]["validation_accuracy"]


def test_without_a_momentum_the_model_keeps_its_last_weights(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    params = _params(tmp_path, None)
    write_head_inputs(params, CLIPS)
    result, trajectory = _train(params, tmp_path, monkeypatch)
    for got, last in zip(result.model.trainable_variables, trajectory[-1], strict=True):
        np.testing.assert_array_equal(got.numpy(), last)
