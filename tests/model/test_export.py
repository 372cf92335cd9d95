"""Export with the frontend inside: SavedModel signature and parity, TFLite float/int8 parity, builtin ops, gate."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from pipeline.config import FeaturesParams  # noqa: E402
from pipeline.errors import KwsError  # noqa: E402
from pipeline.export.serving import (  # noqa: E402
    build_serving_model,
    export_saved_model,
    read_labels,
    saved_model_latency_ms,
)
from pipeline.export.tflite import (  # noqa: E402
    FLOAT_SCOPE,
    TfliteModel,
    agreement,
    check_builtin_only,
    convert,
    int8_gate,
    latency_ms,
)
from pipeline.features.frontend import compute_features, frontend_from_params  # noqa: E402
from pipeline.inference import load_saved_model, load_tflite, read_saved_model_card, read_tflite_card  # noqa: E402
from pipeline.models import build_model  # noqa: E402

pytestmark = pytest.mark.slow

LABELS = ["_silence_", "_unknown_", "yes", "no"]
SAMPLES = 16000


def _clips(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four kinds of clip, one per class: near-silence, noise, and two tones at different pitches and loudness."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / SAMPLES
    labels = np.arange(n) % len(LABELS)
    clips = np.empty((n, SAMPLES), np.float32)
    for i, label in enumerate(labels):
        gain = 10 ** rng.uniform(-1.5, 0)
        if label == 0:
            x = 0.001 * rng.standard_normal(SAMPLES)
        elif label == 1:
            x = 0.3 * gain * rng.standard_normal(SAMPLES)
        else:
            f = (300 if label == 2 else 1200) * rng.uniform(0.9, 1.1)
            x = 0.5 * gain * np.sin(2 * np.pi * f * t) * np.hanning(SAMPLES) + 0.002 * rng.standard_normal(SAMPLES)
        clips[i] = np.clip(x, -1, 1)
    return clips, labels


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny DS-CNN fitted for a few steps on four synthetic classes, wrapped with the frontend and exported."""
    keras.utils.set_random_seed(3)
    features = FeaturesParams()
    classifier = build_model({"name": "ds_cnn", "filters": 8, "blocks": 1}, (98, 40), len(LABELS))
    train_x, train_y = _clips(64, seed=1)
    classifier.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(compute_features(train_x, features), train_y, epochs=8, batch_size=16, verbose=0)
    model = build_serving_model(frontend_from_params(features), classifier, features.clip_samples)
    root = tmp_path_factory.mktemp("export")
    export_saved_model(model, root / "saved_model", LABELS, SAMPLES, "mfcc")
    clips, labels = _clips(20, seed=2)
    return {"root": root, "model": model, "clips": clips, "labels": labels, "train": train_x,
            "keras": model.predict(clips, verbose=0)["scores"]}  # fmt: skip


def test_saved_model_signature_is_exact(exported):
    fn = tf.saved_model.load(str(exported["root"] / "saved_model")).signatures["serving_default"]
    (inputs,) = fn.structured_input_signature[1].items()
    (outputs,) = fn.structured_outputs.items()
    assert inputs[0] == "audio" and inputs[1].shape.as_list() == [None, SAMPLES] and inputs[1].dtype == tf.float32
    assert outputs[0] == "scores" and outputs[1].shape.as_list() == [None, 4] and outputs[1].dtype == tf.float32
    assert read_labels(exported["root"] / "saved_model") == LABELS
    assert read_saved_model_card(exported["root"] / "saved_model") == {
        "format": 1, "labels": LABELS, "sample_rate": 16000, "clip_samples": SAMPLES, "preprocess": "mfcc", "streaming": None,
        "recognize": None}


def test_labels_travel_inside_the_exports(exported, tmp_path):
    """Fault: a .tflite copied without labels.txt fell back to params.yaml's labels. The model card (labels, rate,
    clip length) is zipped onto the .tflite and kept in the SavedModel's assets, so a lone copy knows its labels."""
    import shutil

    convert(exported["root"] / "saved_model", exported["root"] / "card.tflite", "float")
    lone = tmp_path / "elsewhere"
    lone.mkdir()
    shutil.copyfile(exported["root"] / "card.tflite", lone / "model.tflite")
    assert read_tflite_card(lone / "model.tflite")["labels"] == LABELS
    predictor = load_tflite(lone / "model.tflite")
    assert (predictor.labels, predictor.sample_rate, predictor.clip_samples) == (LABELS, 16000, SAMPLES)
    assert predictor.info["model_card"] is True
    assert predictor.scores(exported["clips"]).argmax(1).tolist() == exported["keras"].argmax(1).tolist()
    shutil.copytree(exported["root"] / "saved_model", lone / "sm")
    (lone / "sm" / "labels.txt").unlink()
    assert load_saved_model(lone / "sm").labels == LABELS

    plain = tmp_path / "plain.tflite"  # a .tflite with no card and no labels.txt: refused, never params.yaml's labels
    plain.write_bytes((lone / "model.tflite").read_bytes()[: _flatbuffer_size(lone / "model.tflite")])
    assert read_tflite_card(plain) is None
    with pytest.raises(KwsError, match="carries no labels and no labels.txt"):
        load_tflite(plain)

    import io
    import zipfile

    damaged = tmp_path / "damaged.tflite"  # a card that is not JSON is named as such, not taken for no card at all
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("kws.json", "{not json")
        z.writestr("labels.txt", "".join(f"{label}\n" for label in LABELS))
    damaged.write_bytes(plain.read_bytes() + archive.getvalue())
    with pytest.raises(KwsError, match=r"damaged.tflite: its model card kws.json is not valid JSON .*re-run the freeze stage"):
        load_tflite(damaged)


def _flatbuffer_size(path) -> int:
    """Bytes of the flatbuffer alone: where the appended zip's first entry starts (zipfile counts from the file start)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        return min(info.header_offset for info in z.infolist())


def test_saved_model_matches_keras(exported):
    scores = load_saved_model(exported["root"] / "saved_model").scores(exported["clips"])
    assert scores.shape == (20, 4) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(scores - exported["keras"]).max() < 1e-5
    assert exported["keras"].std(axis=0).max() > 0.01  # the fitted model does not score everything alike


def test_export_rejects_wrong_label_count_and_replaces_atomically(exported, tmp_path):
    with pytest.raises(KwsError, match="3 labels"):
        export_saved_model(exported["model"], tmp_path / "sm", LABELS[:3], SAMPLES)
    assert not (tmp_path / "sm").exists()
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "stale.txt").write_text("old")
    export_saved_model(exported["model"], tmp_path / "sm", LABELS, SAMPLES)
    assert not (tmp_path / "sm" / "stale.txt").exists() and (tmp_path / "sm" / "saved_model.pb").exists()


def test_tflite_float_matches_keras(exported):
    info = convert(exported["root"] / "saved_model", exported["root"] / "float.tflite", "float")
    assert info["bytes"] == (exported["root"] / "float.tflite").stat().st_size > 0
    assert info["inputs"][0]["shape"] == [-1, SAMPLES] and info["inputs"][0]["dtype"] == "float32"
    assert info["outputs"][0]["shape"] == [-1, 4] and info["outputs"][0]["dtype"] == "float32"
    assert "RFFT2D" in info["ops"] and info["int8_mac_fraction"] == 0
    model = TfliteModel(exported["root"] / "float.tflite")
    scores = model.predict(exported["clips"])
    assert agreement(scores, exported["keras"]) == 1.0
    assert np.abs(scores - exported["keras"]).max() < 1e-4
    assert model.predict(exported["clips"][0]).shape == (1, 4)


def test_tflite_int8_keeps_frontend_float_and_agrees(exported):
    out = exported["root"] / "int8.tflite"
    info = convert(exported["root"] / "saved_model", out, "int8", representative=exported["train"])
    check_builtin_only(out.read_bytes())
    assert info["scheme"] == "float_frontend"
    assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["float32", "float32"]
    assert info["ops"]["CONV_2D"] == {"int8": 2} and info["ops"]["DEPTHWISE_CONV_2D"] == {"int8": 1}
    assert info["ops"]["RFFT2D"] == {"complex64": 1} and info["ops"]["LOG"] == {"float32": 1}
    assert info["weight_bytes"].get("int8", 0) > 0
    scores = TfliteModel(out).predict(exported["clips"])
    agree = agreement(scores, exported["keras"])
    print(f"int8 (float frontend) top-1 agreement with Keras: {agree:.0%}")
    assert agree >= 0.9


def test_tflite_int8_io_quantizes_audio(exported):
    out = exported["root"] / "int8_io.tflite"
    info = convert(exported["root"] / "saved_model", out, "int8", exported["train"], scheme="int8_io")
    (inp,), (outp,) = info["inputs"], info["outputs"]
    assert inp["dtype"] == "int8" and inp["scale"] > 0 and outp["dtype"] == "int8" and outp["scale"] > 0
    scores = TfliteModel(out).predict(exported["clips"])
    assert scores.dtype == np.float32 and scores.shape == (20, 4)
    assert agreement(scores, exported["keras"]) > 0.6


def test_convert_errors_are_one_line(exported, tmp_path):
    with pytest.raises(KwsError, match="representative"):
        convert(exported["root"] / "saved_model", tmp_path / "x.tflite", "int8")
    with pytest.raises(KwsError, match="conversion failed"):
        convert(tmp_path / "missing", tmp_path / "x.tflite", "float")
    assert not (tmp_path / "x.tflite").exists()


def test_int8_gate():
    int8_gate(0.90, 0.89, max_drop_points=2.0)
    int8_gate(0.90, 0.95, max_drop_points=0.0)
    message = r"loses 30.00 points of accuracy on testing \(float 90.00%, int8 60.00%\), above freeze.max_int8_drop 2$"
    with pytest.raises(KwsError, match=message):
        int8_gate(0.90, 0.60, max_drop_points=2.0)
    with pytest.raises(KwsError, match=r"loses 1.04 points .*\(float 95.60%, int8 94.56%\), above freeze.max_int8_drop 1$"):
        int8_gate(0.9560, 0.9456, max_drop_points=1.0)  # once printed as "loses 1.0 points ... above 1"


def test_int8_gate_catches_shuffled_scores(exported):
    labels, good = exported["labels"], exported["keras"]
    broken = np.roll(good, 1, axis=1)  # a quantization that scrambled the classes
    float_acc, broken_acc = (float(np.mean(s.argmax(1) == labels)) for s in (good, broken))
    with pytest.raises(KwsError, match="int8 model loses"):
        int8_gate(float_acc, broken_acc, max_drop_points=2.0)
    int8_gate(float_acc, float_acc, max_drop_points=2.0)


def test_latency_ms_positive(exported):
    predict = load_saved_model(exported["root"] / "saved_model").scores
    result = latency_ms(predict, exported["clips"][0], repeats=5, warmup=1)
    assert 0 < result["median_ms"] <= result["p90_ms"] and result["repeats"] == 5
    here = latency_ms(predict, exported["clips"][0], repeats=3, threads=1)
    assert here["median_ms"] > 0 and here["tf_threads_applied"] is False  # TF already started in this process
    fresh = saved_model_latency_ms(exported["root"] / "saved_model", exported["clips"][0], threads=1, repeats=5)
    assert fresh["median_ms"] > 0 and fresh["tf_threads_applied"] is True


def test_any_feature_layer_exports(tmp_path):
    """Not MFCC-specific: a learned framing layer (audio -> [B, 16, 96]) goes through the same export path."""
    keras.utils.set_random_seed(0)
    wave = keras.Input((SAMPLES,), name="wave")
    frames = keras.layers.Reshape((16, SAMPLES // 16))(wave)
    embedding = keras.Model(wave, keras.layers.Dense(96, activation="tanh")(frames), name="embedding")
    head = keras.Sequential([keras.Input((16, 96)), keras.layers.Flatten(), keras.layers.Dense(4)], name="head")
    model = build_serving_model(embedding, head, SAMPLES)
    export_saved_model(model, tmp_path / "sm", LABELS, SAMPLES)
    clips, _ = _clips(8, seed=4)
    info = convert(tmp_path / "sm", tmp_path / "int8.tflite", "int8", representative=clips)
    assert info["ops"]["FULLY_CONNECTED"] == {"float32": 1, "int8": 1}  # the feature layer's stays float
    scores = TfliteModel(tmp_path / "int8.tflite").predict(clips)
    assert np.abs(scores - model.predict(clips, verbose=0)["scores"]).max() < 0.02  # an untrained head: near-ties


def test_embedding_model_streams_on_the_shared_sequence(tmp_path):
    """A speech-embedding SavedModel carries `embed_sequence` and `head`: `kws stream` then scores every 80 ms from
    one embedding pass, the same scores as the Keras model's; a from-scratch model streams by windows."""
    from pipeline.config import StreamParams
    from pipeline.features.embedding import EmbeddingFeatures
    from pipeline.inference import load_keras

    keras.utils.set_random_seed(5)
    features = FeaturesParams(preprocess="speech_embedding")
    head = build_model({"name": "embedding_head"}, features.feature_shape, len(LABELS))
    head.save(tmp_path / "model.keras")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    layer = EmbeddingFeatures()
    layer.build((None, SAMPLES))
    card = export_saved_model(build_serving_model(layer, head, SAMPLES), tmp_path / "sm", LABELS, SAMPLES, "speech_embedding")
    assert card["streaming"] == {"hop": 1280, "span": 12512, "window_vectors": 16}
    predictor = load_saved_model(tmp_path / "sm")
    assert predictor.info["streaming"] == "sequence" and predictor.capabilities == {"clips", "sequence"}
    settings = StreamParams()
    assert predictor.stream_mode(settings) == "sequence"
    assert predictor.stream_mode(settings.model_copy(update={"mode": "windows"})) == "windows"
    clips, _ = _clips(6, seed=8)
    audio = clips.reshape(-1)
    scores, times = predictor.stream_scores(audio, settings)
    assert scores.shape == (1 + (len(audio) - 12512) // 1280 - 15, len(LABELS))
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    keras_predictor = load_keras(tmp_path / "model.keras", features)
    assert keras_predictor.capabilities == {"clips", "sequence", "features"}
    keras_scores, keras_times = keras_predictor.stream_scores(audio, settings)
    np.testing.assert_array_equal(times, keras_times)
    assert np.abs(scores - keras_scores).max() < 1e-5
    assert predictor.scores(clips).shape == (6, len(LABELS))


def test_speech_embedding_int8_is_integer_past_the_spectral_frontend(tmp_path):
    """Fault: the int8 export of the default model kept the whole embedding backbone in float (0.4 % of MACs in
    int8, 1.43 MB vs 1.52 MB float). Only the spectral frontend (STFT, mel, log) stays float now."""
    from pipeline.features.embedding import EmbeddingFeatures

    keras.utils.set_random_seed(6)
    features = FeaturesParams(preprocess="speech_embedding")
    head = build_model({"name": "embedding_head"}, features.feature_shape, len(LABELS))
    layer = EmbeddingFeatures()
    layer.build((None, SAMPLES))
    export_saved_model(build_serving_model(layer, head, SAMPLES), tmp_path / "sm", LABELS, SAMPLES, "speech_embedding")
    clips, _ = _clips(24, seed=9)
    float_info = convert(tmp_path / "sm", tmp_path / "float.tflite", "float")
    info = convert(tmp_path / "sm", tmp_path / "int8.tflite", "int8", representative=clips, calibration_clips=24)
    # the backbone's first block (it reads the log-mel energies) stays float; its 19 other convolutions and the
    # head's temporal convolution are int8
    assert info["ops"]["CONV_2D"] == {"float32": 1, "int8": 20}
    assert info["ops"]["RFFT2D"] == {"complex64": 1} and info["ops"]["LOG"] == {"float32": 1}
    assert info["int8_mac_fraction"] > 0.95 and float_info["int8_mac_fraction"] == 0
    assert info["bytes"] < 0.4 * float_info["bytes"]  # int8 weights: a quarter of the float ones, plus the frontend
    assert [t["dtype"] for t in info["inputs"] + info["outputs"]] == ["float32", "float32"]
    float_scores = TfliteModel(tmp_path / "float.tflite").predict(clips)
    assert agreement(TfliteModel(tmp_path / "int8.tflite").predict(clips), float_scores) >= 0.75

    # the freeze stage's first fallback for a model whose calibrated integer backbone loses too much: int8 weights
    # and LiteRT's dynamic-range kernels past the float frontend, whose mel matrix stays float32
    dynamic = convert(tmp_path / "sm", tmp_path / "dynamic.tflite", "int8", scheme="dynamic_backbone")
    assert dynamic["ops"]["CONV_2D"] == {"float32": 21} and dynamic["macs"]["int8_dynamic"] > 0.95 * sum(dynamic["macs"].values())
    assert dynamic["int8_mac_fraction"] > 0.95 and dynamic["bytes"] < 0.4 * float_info["bytes"]
    assert "dynamic-range kernels" in dynamic["float_part"] and "calibration" not in dynamic
    spectral = [d for d in TfliteModel(tmp_path / "dynamic.tflite").interpreter.get_tensor_details()
                if FLOAT_SCOPE.search(d["name"].split(";")[0]) and d["dtype"] == np.int8]  # fmt: skip
    assert not spectral, [d["name"] for d in spectral]
    assert agreement(TfliteModel(tmp_path / "dynamic.tflite").predict(clips), float_scores) >= 0.9

    # its last fallback: only the head is int8
    kept = convert(tmp_path / "sm", tmp_path / "head8.tflite", "int8", representative=clips, calibration_clips=24,
                   scheme="float_backbone")  # fmt: skip
    assert kept["ops"]["CONV_2D"] == {"float32": 20, "int8": 1} and kept["int8_mac_fraction"] < 0.05
    assert "backbone) runs in float32" in kept["float_part"]
    assert agreement(TfliteModel(tmp_path / "head8.tflite").predict(clips), float_scores) >= 0.9


def test_backbone_fallback_only_for_an_embedding_model_over_the_allowed_drop():
    from pipeline.export.freeze import backbone_fallback

    embedding = frozenset({"clips", "sequence", "features"})
    assert backbone_fallback("float_frontend", embedding, {"testing": 0.2, "real_dev": 1.36}, 1.0) == "dynamic_backbone"
    assert backbone_fallback("dynamic_backbone", embedding, {"testing": 1.2}, 1.0) == "float_backbone"
    assert backbone_fallback("dynamic_backbone", embedding, {"testing": 0.3}, 1.0) is None
    assert backbone_fallback("float_frontend", embedding, {"testing": 0.2, "real_dev": 0.9}, 1.0) is None
    assert backbone_fallback("float_frontend", frozenset({"clips", "features"}), {"testing": 3.0}, 1.0) is None  # MFCC: no backbone
    assert backbone_fallback("float_backbone", embedding, {"testing": 3.0}, 1.0) is None  # the last one


def test_int8_fallbacks_try_the_dynamic_backbone_before_the_float_one():
    """A tuned backbone's calibrated int8 file lost 1.27 pt on real_dev and freeze went straight to a 1.4 MB float
    backbone; the dynamic-range file (0.4 pt on such a model) is tried first, the float backbone only after it."""
    from pipeline.export.freeze import int8_fallbacks

    def scores(float_accuracy: float, int8_accuracy: float) -> dict:
        return {"real_dev": {"accuracy": {"float": float_accuracy, "int8": int8_accuracy}}}

    embedding, calibration = frozenset({"clips", "sequence"}), {"draws": 3, "chosen": 2}
    start = {"scheme": "float_frontend", "calibration": calibration}
    outcomes = {"dynamic_backbone": 0.918, "float_backbone": 0.921}
    asked = []

    def redo(scheme):
        asked.append(scheme)
        return {"scheme": scheme}, scores(0.922, outcomes[scheme])

    info, scored = int8_fallbacks(start, scores(0.922, 0.9093), redo, embedding, 1.0)
    assert asked == ["dynamic_backbone"] and info["scheme"] == "dynamic_backbone" and "calibration" not in info
    assert info["fallback"] == {"from": "float_frontend", "lost_points": {"real_dev": 1.27},
                                "tried": [{"scheme": "float_frontend", "lost_points": {"real_dev": 1.27}}]}
    assert scored["real_dev"]["accuracy"]["int8"] == 0.918

    outcomes["dynamic_backbone"], asked[:] = 0.905, []  # the dynamic file over the allowed drop too
    info, _ = int8_fallbacks(start, scores(0.922, 0.9093), redo, embedding, 1.0)
    assert asked == ["dynamic_backbone", "float_backbone"] and info["calibration"] == calibration
    assert [t["scheme"] for t in info["fallback"]["tried"]] == ["float_frontend", "dynamic_backbone"]

    asked[:] = []
    kept, _ = int8_fallbacks(start, scores(0.922, 0.915), redo, embedding, 1.0)  # within the drop: untouched
    assert kept is start and not asked


def test_int8_log_and_gate_say_what_was_lost_and_tried():
    """The fallback's log once read 'loses -0.10 points' for a gain, and the gate's error named no scheme."""
    from pipeline.export.freeze import points_text

    assert points_text({"real_dev": 1.2749, "testing": -0.1}) == "loses 1.27 pt on real_dev, gains 0.10 pt on testing"
    with pytest.raises(KwsError, match=r"on real_dev .*\(schemes tried: float_frontend, dynamic_backbone, float_backbone\)$"):
        int8_gate(0.92, 0.90, 1.0, "real_dev", ["float_frontend", "dynamic_backbone", "float_backbone"])


def test_from_scratch_model_streams_by_windows(exported):
    from pipeline.config import StreamParams

    predictor = load_saved_model(exported["root"] / "saved_model")
    assert predictor.sequence_fn is None and predictor.info["streaming"] == "windows"
    assert predictor.capabilities == {"clips"} and predictor.stream_mode(StreamParams()) == "windows"
