"""The one audio frontend: shapes, numerics against numpy references, serialization, TFLite builtins."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from pipeline.config import FeaturesParams  # noqa: E402
from pipeline.features.frontend import (  # noqa: E402
    MODES,
    AudioFrontend,
    Recipe,
    apply_recipe,
    compute_features,
    frontend_from_params,
    output_shape_for,
)

RATE = 16000


def _clips(n: int, seed: int = 0) -> np.ndarray:
    """Non-silent test clips: a few sines plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    freqs = rng.uniform(200, 4000, (n, 3, 1))
    tones = np.sin(2 * np.pi * freqs * t).sum(axis=1) * 0.2
    return (tones + rng.normal(0, 0.05, (n, RATE))).astype(np.float32)


@pytest.mark.parametrize("mode", MODES)
def test_default_shapes(mode):
    p = FeaturesParams(preprocess=mode)
    assert output_shape_for(p) == (98, 40)
    features = compute_features(_clips(2), p)
    assert features.shape == (2, 98, 40) and features.dtype == np.float32
    assert np.isfinite(features).all()
    layer = frontend_from_params(p)
    assert layer.compute_output_shape((None, RATE)) == (None, 98, 40)
    assert tuple(layer(tf.constant(_clips(1))).shape) == (1, 98, 40)


def test_frames_formula_without_end_padding():
    p = FeaturesParams(clip_duration_ms=1000, window_size_ms=25.0, window_stride_ms=12.0)
    expected = 1 + (16000 - 400) // 192
    assert output_shape_for(p) == (expected, 40)
    assert compute_features(_clips(1), p).shape == (1, expected, 40)


@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_single_clip(mode):
    p = FeaturesParams(preprocess=mode)
    clips = _clips(5, seed=1)
    batched = compute_features(clips, p, batch_size=2)
    for i, clip in enumerate(clips):
        np.testing.assert_allclose(batched[i], compute_features(clip, p), atol=1e-4)


def test_int16_input_matches_float():
    p = FeaturesParams(preprocess="log_mel")
    pcm = np.round(_clips(2, seed=2) * 32767).astype(np.int16)
    np.testing.assert_allclose(compute_features(pcm, p), compute_features(pcm / 32768.0, p), atol=1e-4)


def test_sine_peaks_in_its_spectrogram_bin():
    p = FeaturesParams(preprocess="spectrogram", feature_bin_count=120)
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(RATE) / RATE)
    features = compute_features(tone.astype(np.float32), p)
    fft_length = 512  # next power of two of the 480-sample window
    expected_bin = round(1000.0 * fft_length / RATE)  # 31.25 Hz a bin -> 32
    assert np.all(features.argmax(axis=1) == expected_bin)


def _reference_dct_ortho(x: np.ndarray, keep: int) -> np.ndarray:
    """Orthonormal DCT-II along the last axis by its textbook sum."""
    n = x.shape[-1]
    out = np.zeros((*x.shape[:-1], keep))
    for k in range(keep):
        scale = np.sqrt(1.0 / n) if k == 0 else np.sqrt(2.0 / n)
        out[..., k] = scale * sum(x[..., i] * np.cos(np.pi * k * (2 * i + 1) / (2 * n)) for i in range(n))
    return out


@pytest.mark.parametrize("bins", [40, 13])
def test_mfcc_is_orthonormal_dct_of_log_mel(bins):
    clips = _clips(2, seed=3)
    log_mel = compute_features(clips, FeaturesParams(preprocess="log_mel", feature_bin_count=40))
    mfcc = compute_features(clips, FeaturesParams(preprocess="mfcc", feature_bin_count=bins))
    np.testing.assert_allclose(mfcc, _reference_dct_ortho(log_mel.astype(np.float64), bins), atol=1e-3)


def test_log_mel_matches_numpy_reference():
    p = FeaturesParams(preprocess="log_mel")
    clip = _clips(1, seed=4)[0]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(480) / 480)
    frames = np.stack([clip[i * 160 : i * 160 + 480] * window for i in range(98)])
    magnitude = np.abs(np.fft.rfft(frames, n=512))
    mel = tf.signal.linear_to_mel_weight_matrix(40, 257, RATE, 20.0, 7000.0).numpy()
    expected = np.log(magnitude @ mel + 1e-6)
    np.testing.assert_allclose(compute_features(clip, p), expected, atol=1e-3)


def test_recipe_covers_power_db_and_padded_window():
    """The speech-embedding style settings (padded Hann, power, given mel, dB with top_db, affine) run as a Recipe."""
    from pipeline.features.frontend import hann_window

    rng = np.random.default_rng(8)
    mel = rng.uniform(0, 1, (257, 32)).astype(np.float32)
    recipe = Recipe(
        frame_length=512, frame_step=160, fft_length=512, window=hann_window(400, 512), power=2, mel=mel,
        log="db", top_db=80.0, input_scale=32767.0, out_scale=0.1, out_offset=2.0,
    )  # fmt: skip
    clips = _clips(2, seed=8)
    clips[1, 4000:] = 0.0  # digital silence: the per-clip floor must apply
    got = apply_recipe(tf.constant(clips), recipe).numpy()
    window = np.pad(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400), 56)
    frames = 1 + (RATE - 512) // 160
    for clip, out in zip(clips, got, strict=True):
        stack = np.stack([clip[i * 160 : i * 160 + 512] * 32767.0 * window for i in range(frames)])
        power = np.abs(np.fft.rfft(stack, n=512)) ** 2
        db = 10 * np.log10(np.maximum(power @ mel, 1e-10))
        expected = np.maximum(db, db.max() - 80.0) / 10 + 2
        np.testing.assert_allclose(out, expected, atol=2e-3)
    assert got[1].min() == pytest.approx(got[1].max() - 8.0, abs=1e-4)


def test_get_config_round_trip():
    layer = AudioFrontend("log_mel", 16000, 400, 160, 512, 32, 60.0, 7600.0, name="fe")
    config = layer.get_config()
    clone = AudioFrontend.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, AudioFrontend) and restored.get_config() == config
    clip = tf.constant(_clips(1, seed=5))
    np.testing.assert_allclose(restored(clip).numpy(), layer(clip).numpy(), atol=1e-5)


def test_saved_keras_model_reloads(tmp_path):
    inputs = keras.Input([RATE])
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(frontend_from_params(FeaturesParams())(inputs)))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    clip = _clips(2, seed=6)
    np.testing.assert_allclose(loaded(clip).numpy(), model(clip).numpy(), atol=1e-4)


def test_unknown_mode_and_short_fft_are_rejected():
    with pytest.raises(ValueError, match="preprocess"):
        AudioFrontend("wavelet")
    with pytest.raises(ValueError, match="fft_length"):
        AudioFrontend("log_mel", window_samples=480, fft_length=256)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_tflite_conversion_uses_builtin_ops_only(mode, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    p = FeaturesParams(preprocess=mode)
    inputs = keras.Input([RATE])
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(frontend_from_params(p)(inputs)))
    model = keras.Model(inputs, outputs)
    model.export(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    blob = converter.convert()  # raises if any op needs Flex / Select TF ops

    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    clip = _clips(1, seed=7)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(clip).numpy(), rtol=1e-3, atol=1e-3)


def test_draw_spectrogram_handles_stereo_other_rate_and_bad_files(tmp_path):
    """The whole file is drawn at its true length (0.7 s: 68 MFCC frames, not a 1 s clip's 98), conversions said."""
    import soundfile as sf

    from pipeline.errors import DataError
    from pipeline.features.plot import draw_spectrogram

    p = FeaturesParams()
    t = np.arange(15435) / 22050  # 0.7 s: 11,200 samples at 16 kHz
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 880 * t)], axis=1)
    sf.write(tmp_path / "a.wav", stereo.astype(np.float32), 22050, subtype="PCM_16")
    drawing = draw_spectrogram(tmp_path / "a.wav", tmp_path / "out" / "a.png", p)
    assert drawing.seconds == pytest.approx(0.7, abs=1e-4)
    assert drawing.notes == ["mixed 2 channels to mono", "resampled 22050 Hz to 16000 Hz"]
    assert drawing.panels == ["MFCC (mfcc): 68 frames × 40"]  # 1 + (11200 - 480) // 160
    assert (tmp_path / "out" / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["a.png"]  # no temp file left behind
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="bad.wav: cannot read audio"):
        draw_spectrogram(tmp_path / "bad.wav", tmp_path / "bad.png", p)
    with pytest.raises(DataError, match="is a folder"):
        draw_spectrogram(tmp_path / "out", tmp_path / "bad.png", p)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match="empty.wav: the audio holds no samples"):
        draw_spectrogram(tmp_path / "empty.wav", tmp_path / "bad.png", p)
    assert not (tmp_path / "bad.png").exists()


def test_draw_spectrogram_speech_embedding_whole_file(tmp_path):
    """Fault: the shipped params (speech_embedding) crashed `kws spectrogram`. Now: mel input and embedding
    sequence of the whole 3 s file — 1 + (48000 - 512) // 160 = 297 mel frames, 1 + (48000 - 12512) // 1280 = 28
    vectors."""
    import soundfile as sf

    from pipeline.features.plot import draw_spectrogram

    p = FeaturesParams(preprocess="speech_embedding")
    t = np.arange(3 * 44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 300 * t), 0.3 * np.sin(2 * np.pi * 500 * t)], axis=1)
    sf.write(tmp_path / "long.wav", stereo.astype(np.float32), 44100, subtype="PCM_16")
    drawing = draw_spectrogram(tmp_path / "long.wav", tmp_path / "long.png", p)
    assert drawing.panels == ["speech-embedding mel input (embedding_mel): 297 frames × 32",
                              "speech embedding (speech_embedding): 28 frames × 96"]  # fmt: skip
    assert drawing.notes == ["mixed 2 channels to mono", "resampled 44100 Hz to 16000 Hz"] and drawing.seconds == 3.0
    assert (tmp_path / "long.png").read_bytes()[:4] == b"\x89PNG"
