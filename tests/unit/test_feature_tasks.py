"""The features stage's chunk task (pipeline/features/tasks.py) gives the training views the in-process run gives."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.features.extract import training_views
from pipeline.features.tasks import VIEW_SEED_STRIDE, FeatureWorker, chunk_tasks
from tests.conftest import make_params, tone_clip

CLIPS = 6


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A split folder with only what training views read: training clips and background noise (int16)."""
    root = tmp_path_factory.mktemp("views")
    clips = np.stack([tone_clip("yes", s, 0, slot=s % 4) for s in range(CLIPS)])
    noise = np.random.default_rng(3).uniform(-0.3, 0.3, 16000 * 4)
    (root / "split").mkdir()
    np.save(root / "split" / "training_audio.npy", (clips * 32767).astype(np.int16))
    np.save(root / "split" / "background_training.npy", (noise * 32767).astype(np.int16))
    return root


def _params(root, view_context: str):
    embedding = {"views": 2, "view_context": view_context, "pad_to_ms": 2000}
    features = {"preprocess": "speech_embedding", "embedding": embedding, "background_frequency": 1.0}
    return make_params(root, features=features)


def _main_view(params, audio: np.ndarray, view: int) -> np.ndarray:
    """One augmented view as the stage computed it before it ran as tasks: the clip zero-padded to the embedding's
    window (`view_context: noise`), shifted and noise-mixed there, then embedded."""
    import tensorflow as tf

    from pipeline.features.augment import make_augmenter
    from pipeline.features.layers import extract

    feat = params.features
    noise = np.load(params.paths.split / "background_training.npy").astype(np.float32) / 32768.0
    window = feat.sample_rate * feat.embedding.pad_to_ms // 1000
    before = (window - audio.shape[1]) // 2  # align: center
    padded = np.pad(audio, [(0, 0), (before, window - audio.shape[1] - before)])
    augment = make_augmenter(feat, noise, params.seed)
    return extract(augment(tf.constant(padded), view * VIEW_SEED_STRIDE).numpy(), feat)


def test_noise_context_views_equal_in_process_and_as_a_task(split, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    params = _params(split, "noise")
    audio = np.load(params.paths.split / "training_audio.npy").astype(np.float32) / 32768.0
    in_process = training_views(params, workers=1)
    (task,) = chunk_tasks("training", CLIPS, views=2)
    as_task = FeatureWorker(params.features, params.seed, params.paths)(task)  # what a Ray worker runs
    np.testing.assert_allclose(as_task, in_process, rtol=0, atol=1e-5)
    np.testing.assert_allclose(in_process[1], _main_view(params, audio, 1), rtol=0, atol=1e-5)
    silence = training_views(_params(split, "silence"), workers=1)
    np.testing.assert_array_equal(silence[0], in_process[0])  # the clean view does not depend on the context
    assert not np.allclose(silence[1], in_process[1], atol=1e-3)  # the noise spans the padded window
