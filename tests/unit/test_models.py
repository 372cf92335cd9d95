"""Model registry: every architecture builds and runs, the TF seed models keep the reference sizes, specs are strict."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

keras = pytest.importorskip("keras")

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.models import MODELS, build_model  # noqa: E402
from pipeline.models.low_latency_svdf import SVDF  # noqa: E402
from pipeline.models.specs import MODEL_NAMES, BcResNetSpec, DsCnnSpec, ModelSpec  # noqa: E402

CLASSES = 12
FRAMES, BINS = 98, 40  # 1 s at 16 kHz, 30 ms windows, 10 ms stride, 40 MFCCs
T_OUT, F_OUT = 49, 20  # after TF's 'SAME' 2x2 max-pool (conv) or 2x2 stride (tiny_conv): ceil(98/2), ceil(40/2)
SVDF_FILTERS = 1280 * 2  # TF: num_units 1280, rank 2

# Weight counts of TensorFlow's speech_commands models.py (create_*_model) for a 98x40 input and 12 labels.
REFERENCE = {
    "single_fc": FRAMES * BINS * CLASSES + CLASSES,  # 47,052
    "conv": (20 * 8 * 1 * 64 + 64)  # first conv 20x8, 64 filters
    + (10 * 4 * 64 * 64 + 64)  # second conv 10x4; the code has no second max-pool
    + (T_OUT * F_OUT * 64 * CLASSES + CLASSES),  # 926,860
    "low_latency_conv": (FRAMES * 8 * 1 * 186 + 186)  # 186 filters spanning all frames, 'VALID', stride 1x1
    + ((BINS - 8 + 1) * 186 * 128 + 128)  # flattened 1x33x186 -> 128
    + (128 * 128 + 128)
    + (128 * CLASSES + CLASSES),  # 949,862
    "low_latency_svdf": BINS * SVDF_FILTERS  # weights_frequency
    + SVDF_FILTERS * FRAMES  # weights_time over input_time_size frames
    + 1280  # bias
    + (1280 * 256 + 256)
    + (256 * 256 + 256)
    + (256 * CLASSES + CLASSES),  # 751,372
    "tiny_conv": (10 * 8 * 1 * 8 + 8) + (T_OUT * F_OUT * 8 * CLASSES + CLASSES),  # 94,740
}


def _features(shape: tuple[int, int], batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def _trainable(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_registry_covers_every_spec():
    """Every spec has a module of its own name with a `build`, and every architecture module has a spec."""
    import importlib
    from pathlib import Path

    import pipeline.models

    assert sorted(MODEL_NAMES) == ["bc_resnet", "conv", "ds_cnn", "embedding_head", "low_latency_conv",
                                   "low_latency_svdf", "single_fc", "tiny_conv"]  # fmt: skip
    modules = sorted(p.stem for p in Path(pipeline.models.__file__).parent.glob("*.py") if p.stem not in {"__init__", "specs"})
    assert modules == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        assert MODELS[name] is importlib.import_module(f"pipeline.models.{name}").build


# every architecture also takes a 20x10 toy input (low_latency_conv's 8-bin-wide kernel needs >= 8 bins)
@pytest.mark.parametrize("shape", [(FRAMES, BINS), (20, 10)], ids=["98x40", "20x10"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_pass_gives_finite_logits(name, shape):
    model = build_model({"name": name}, shape, CLASSES)
    assert model.input_shape == (None, *shape)
    logits = np.asarray(model(_features(shape), training=False))
    assert logits.shape == (2, CLASSES) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert not np.allclose(logits[0], logits[1])  # depends on the input


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_seed_models_match_tensorflow_reference_size(name):
    model = build_model({"name": name}, (FRAMES, BINS), CLASSES)
    assert model.count_params() == pytest.approx(REFERENCE[name], rel=0.05)
    assert model.count_params() == REFERENCE[name]  # same layers as TF, so exactly equal


def test_modern_models_are_small():
    ds_cnn = build_model(DsCnnSpec(), (FRAMES, BINS), CLASSES)
    assert 20_000 <= ds_cnn.count_params() <= 30_000  # DS-CNN-S-like, ~24 k
    bc = build_model(BcResNetSpec(), (FRAMES, BINS), CLASSES)
    assert _trainable(bc) == pytest.approx(9_200, rel=0.05)  # BC-ResNet-1: 9.2 k in the paper
    bc2 = build_model(BcResNetSpec(scale=2), (FRAMES, BINS), CLASSES)
    assert 2.5 * _trainable(bc) < _trainable(bc2) < 4 * _trainable(bc)  # width x2 -> roughly x3.5 weights


def test_initialisation_is_deterministic_under_the_global_seed():
    def weights(seed: int) -> list[np.ndarray]:
        keras.utils.set_random_seed(seed)
        return [np.asarray(w) for w in build_model(DsCnnSpec(blocks=1), (20, 10), CLASSES).weights]

    first, again, other = weights(3), weights(3), weights(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_svdf_matches_the_reference_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7, 5)).astype(np.float32)
    layer = SVDF(units=4, rank=2)
    out = np.asarray(layer(x))
    wf, wt, bias = (np.asarray(w) for w in (layer.feature_kernel, layer.time_kernel, layer.bias))
    # TF: conv1d of the feature filters per frame, then each filter's time filter, rank outputs summed per unit
    activations = np.stack([x[:, t, :] @ wf for t in range(7)], axis=1)  # [batch, time, filters]
    per_filter = np.stack([activations[:, :, f] @ wt[:, f] for f in range(8)], axis=1)  # [batch, filters]
    expected = per_filter.reshape(3, 4, 2).sum(axis=2) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

    short = SVDF(units=4, rank=2, memory_size=3)
    np.testing.assert_allclose(np.asarray(short(x)), np.asarray(short(x[:, -3:])), rtol=1e-5)  # only the last frames


def test_svdf_model_survives_keras_save_and_load(tmp_path):
    model = build_model({"name": "low_latency_svdf", "units": 16, "fc_units": 8}, (20, 10), CLASSES)
    model.save(tmp_path / "svdf.keras")
    loaded = keras.saving.load_model(tmp_path / "svdf.keras")
    x = _features((20, 10))
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_unknown_model_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"train\.model\.name: unknown model 'resnet50'; valid: .*ds_cnn"):
        build_model({"name": "resnet50"}, (FRAMES, BINS), CLASSES)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        build_model(SimpleNamespace(name="nope"), (FRAMES, BINS), CLASSES)
    with pytest.raises(ConfigError, match=r"train\.model\.dropout"):
        build_model({"name": "ds_cnn", "dropout": 1.5}, (FRAMES, BINS), CLASSES)


def test_specs_are_strict_and_frozen():
    with pytest.raises(ValidationError, match="Extra inputs"):
        DsCnnSpec(filter=64)
    with pytest.raises(ValidationError):
        TypeAdapter(ModelSpec).validate_python({"name": "conv", "dropout_rate": 0.5})
    with pytest.raises(ValidationError):
        BcResNetSpec(scale=9)
    with pytest.raises(ValidationError):
        DsCnnSpec().model_copy().__setattr__("blocks", 2)
    assert TypeAdapter(ModelSpec).validate_python({"name": "bc_resnet", "scale": 2}) == BcResNetSpec(scale=2)


def test_importing_specs_and_config_does_not_load_tensorflow():
    code = "import sys, pipeline.config, pipeline.models; assert not {'tensorflow', 'keras'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_embedding_head_ensemble_averages_independent_heads():
    import keras

    single = build_model({"name": "embedding_head", "filters": 8, "kernel": 3}, (16, 96), 5)
    keras.utils.set_random_seed(1)
    three = build_model({"name": "embedding_head", "filters": 8, "kernel": 3, "heads": 3}, (16, 96), 5)
    assert three.count_params() == 3 * single.count_params()
    x = np.random.default_rng(0).standard_normal((4, 16, 96)).astype(np.float32)
    logits = three(x, training=False).numpy()
    assert logits.shape == (4, 5)
    heads = [keras.Model(three.inputs, three.get_layer(f"logits_{i}").output) for i in range(3)]
    parts = [head(x, training=False).numpy() for head in heads]
    np.testing.assert_allclose(logits, np.mean(parts, axis=0), atol=1e-5)
    assert np.abs(parts[0] - parts[1]).max() > 1e-3  # own initialisation per head


def test_bc_resnet_frequency_stride_matches_same_padded_strided_depthwise():
    """Found in CI on an AVX2-only CPU: TF's DepthwiseConv2D refused the (1, 2) stride. The stride is now padding +
    stride-1 convolution + subsampling; its outputs equal a strided 'same' depthwise convolution computed by hand."""
    import keras
    import numpy as np

    from pipeline.models.bc_resnet import _freq_depthwise

    rng = np.random.default_rng(0)
    for bins in (5, 10, 20):
        x = rng.standard_normal((2, 4, bins, 3)).astype(np.float32)
        inputs = keras.Input(x.shape[1:])
        model = keras.Model(inputs, _freq_depthwise(inputs, 2, name="f"))
        kernel = model.get_layer("f").get_weights()[0]  # [1, 3, C, 1]
        out = model(x).numpy()
        width = -(-bins // 2)
        pad = max((width - 1) * 2 + 3 - bins, 0) // 2
        padded = np.pad(x, ((0, 0), (0, 0), (pad, 3), (0, 0)))
        want = np.stack([sum(padded[:, :, 2 * j + k, :] * kernel[0, k, :, 0] for k in range(3)) for j in range(width)], axis=2)
        assert out.shape == (2, 4, width, 3)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
