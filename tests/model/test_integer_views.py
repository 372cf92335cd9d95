"""Integer training views (features.embedding.integer_views, pipeline/export/integer.py): the features stage's
int8 backbone is the one inside the freeze stage's int8 file, and its embeddings follow the float views."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.export.integer import IntegerBackbone, calibration_audio, write_integer_backbone
from pipeline.features.extract import run_features
from tests.conftest import make_params, tone_clip

pytestmark = pytest.mark.slow
CLIPS = 12


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A split folder with what the features stage reads: clips of three sets and training background noise."""
    root = tmp_path_factory.mktemp("integer")
    (root / "split").mkdir()
    words = ["yes", "no", "up", "down"]
    for offset, name in enumerate(["training", "validation", "testing"]):
        clips = np.stack([tone_clip(words[i % 4], i + 10 * offset, 0, slot=i % 4) for i in range(CLIPS)])
        np.save(root / "split" / f"{name}_audio.npy", (clips * 32767).astype(np.int16))
    noise = np.random.default_rng(3).uniform(-0.3, 0.3, 16000 * 4)
    np.save(root / "split" / "background_training.npy", (noise * 32767).astype(np.int16))
    return root


def _params(root, integer: bool):
    embedding = {"views": 2, "integer_views": integer}
    return make_params(root, features={"preprocess": "speech_embedding", "embedding": embedding, "background_frequency": 1.0},
                       freeze={"representative_clips": 10})  # fmt: skip


def test_features_stage_stores_integer_views_after_the_float_ones(root, monkeypatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    features = root / "features"
    plain = run_features(_params(root, False), workers=1)
    float_views = np.load(features / "training_features.npy")
    assert plain["sets"]["training"]["integer_views"] == 0 and float_views.shape[0] == 2
    described = run_features(_params(root, True), workers=1)
    both = np.load(features / "training_features.npy")
    assert both.shape == (4, CLIPS, 16, 96)
    assert described["sets"]["training"]["integer_views"] == 2
    assert json.loads((features / "frontend.json").read_text())["params"]["embedding"]["integer_views"] is True
    np.testing.assert_allclose(both[:2], float_views, rtol=0, atol=1e-5)  # the float views are unchanged
    for view in range(2):  # the int8 backbone's rounding: close to the float view, never equal to it
        error = both[2 + view] - both[view]
        assert 0 < np.sqrt(np.mean(error**2)) < 0.35 * both[view].std()
    backbone = features / "backbone_int8.tflite"
    audio = np.load(root / "split" / "training_audio.npy").astype(np.float32) / 32768.0
    np.testing.assert_array_equal(IntegerBackbone(backbone)(audio), both[2])  # view 0 is the clean clip
    run_features(_params(root, False), workers=1)
    assert not backbone.exists(), "a stale int8 backbone must not outlive its setting"
    assert np.load(features / "training_features.npy").shape[0] == 2


def test_integer_backbone_equals_the_backbone_inside_the_int8_file(root, tmp_path) -> None:
    """The head trains on what model_int8.tflite's head reads: the same converter and calibration clips give
    bit-identical embeddings, whatever head sits on them."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.export.serving import build_serving_model, export_saved_model
    from pipeline.export.tflite import convert
    from pipeline.features.layers import feature_layer

    params = _params(root, True)
    backbone = write_integer_backbone(params, tmp_path / "backbone_int8.tflite")
    head = keras.Sequential([keras.Input((16, 96)), keras.layers.Conv1D(8, 3), keras.layers.GlobalMaxPooling1D(),
                             keras.layers.Dense(4)])  # fmt: skip
    serving = build_serving_model(feature_layer(params.features), head, params.features.clip_samples)
    export_saved_model(serving, tmp_path / "saved", ["_silence_", "_unknown_", "yes", "no"], 16000, "speech_embedding")
    whole = convert(tmp_path / "saved", tmp_path / "model_int8.tflite", "int8", calibration_audio(params, 0))
    assert whole["scheme"] == "float_frontend"
    interpreter = Interpreter(model_path=str(tmp_path / "model_int8.tflite"), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    in_frontend = lambda index: "frontend" in tensors[index]["name"].split(";")[0]  # noqa: E731
    # what the head's first op reads: the int8 feature-layer tensor that an op outside the feature layer takes
    (embedding,) = {tensors[i]["name"]: tensors[i] for op in interpreter._get_ops_details()  # noqa: SLF001
                    if not any(in_frontend(o) for o in op["outputs"])
                    for i in op["inputs"] if i >= 0 and in_frontend(i) and tensors[i]["dtype"] == np.int8}.values()  # fmt: skip
    audio = np.load(root / "split" / "testing_audio.npy").astype(np.float32) / 32768.0
    runner = IntegerBackbone(backbone)
    for clip in audio[:4]:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip[None])
        interpreter.invoke()
        scale, zero = embedding["quantization"]
        inside = (interpreter.get_tensor(embedding["index"]).astype(np.float32) - zero) * scale
        np.testing.assert_array_equal(runner(clip[None]), inside)
