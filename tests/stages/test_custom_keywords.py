"""Custom keywords with zero recordings: any English words -> generated corpus -> trained, exported model."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import parse_params
from pipeline.data.sources import fetch_sources
from pipeline.data.split import run_split
from pipeline.features.extract import run_features

pytestmark = pytest.mark.slow


def test_new_words_flow_from_generation_to_the_exported_model(tmp_path, mlflow_env):
    from pipeline.evaluate.run import run_evaluate
    from pipeline.export.serving import build_serving_model, export_saved_model, read_labels
    from pipeline.inference import load_saved_model
    from pipeline.features.layers import feature_layer
    from pipeline.train.run import run_train

    raw = {
        "seed": 5,
        "paths": {name: str(tmp_path / name) for name in ("raw", "downloads", "split", "features", "reports", "checkpoints", "logs", "model", "export")},
        "data": {"keywords": ["lights", "music"], "unknown_words": ["table", "window"],
                 "sources": [{"kind": "synthetic", "speakers": 16, "repetitions": 2, "noise_seconds": 20}]},
        "split": {"validation_percentage": 25, "testing_percentage": 25, "silence_percentage": 20, "unknown_percentage": 20},
        "train": {"steps": [200], "learning_rate": [0.003], "batch_size": 32, "eval_step_interval": 200,
                  "model": {"name": "tiny_conv"}},
        "features": {"preprocess": "mfcc"},
        "evaluate": {"streaming": {"recording_seconds": 30}},
    }  # fmt: skip
    params = parse_params(raw)
    fetch_sources(params, progress=False)
    assert sorted(p.name for p in (params.paths.raw / "synthetic").iterdir() if p.is_dir()) == [
        "_background_noise_", "lights", "music", "table", "window"]  # fmt: skip
    run_split(params, progress=False)
    assert (params.paths.split / "labels.txt").read_text().split() == ["_silence_", "_unknown_", "lights", "music"]
    run_features(params)
    metrics = run_train(params)
    assert metrics["validation_accuracy"] > 0.5  # 4 classes; held-out voices
    evaluation = run_evaluate(params)
    assert evaluation["testing"]["clips"] > 0
    import keras

    classifier = keras.saving.load_model(params.paths.model / "model.keras", compile=False)
    serving = build_serving_model(feature_layer(params.features), classifier, params.features.clip_samples)
    export_saved_model(serving, tmp_path / "export", params.labels, params.features.sample_rate)
    assert read_labels(tmp_path / "export") == ["_silence_", "_unknown_", "lights", "music"]
    clips = np.load(params.paths.split / "testing_audio.npy").astype(np.float32) / 32768
    targets = np.load(params.paths.split / "testing_labels.npy")
    scores = load_saved_model(tmp_path / "export").scores(clips)
    assert scores.shape == (len(clips), 4)
    assert (scores.argmax(1) == targets).mean() > 0.5
