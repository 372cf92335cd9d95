"""Serving model `audio -> scores` (feature layer + classifier + softmax) and its TF SavedModel export."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import KwsError
from pipeline.features.layers import FRONTEND_NAME, scoped_frontend, sequence_capable
from pipeline.fileio import atomic_dir
from pipeline.inference import (  # the names a Predictor reads back (pipeline.inference is TensorFlow-free)
    CARD_FILE,
    EMBED_SIGNATURE,
    EMBEDDINGS_NAME,
    HEAD_SIGNATURE,
    INPUT_NAME,
    LABELS_FILE,
    OUTPUT_NAME,
    SIGNATURE,
    model_card,
)


def build_serving_model(feature_layer, classifier, clip_samples: int) -> keras.Model:
    """Input `audio` float32 [None, clip_samples] -> any feature layer -> classifier -> softmax `scores`."""
    audio, features = scoped_frontend(feature_layer, clip_samples, INPUT_NAME)
    logits = classifier(features)
    scores = keras.layers.Softmax(dtype="float32", name=OUTPUT_NAME)(logits)
    return keras.Model(audio, {OUTPUT_NAME: scores}, name="serving")


def load_serving_model(classifier_path: Path, features) -> tuple[keras.Model, keras.Model]:
    """(serving model, classifier): the trained classifier (features -> logits) of `classifier_path` behind the
    feature layer that `features` (FeaturesParams) describes. Raises DataError when the file is missing."""
    from pipeline.errors import DataError
    from pipeline.features.layers import feature_layer

    path = Path(classifier_path)
    if not path.is_file():
        raise DataError(f"{path}: not found; run the train stage first")
    classifier = keras.saving.load_model(path, compile=False)
    return build_serving_model(feature_layer(features), classifier, features.clip_samples), classifier


def clip_samples_of(serving_model: keras.Model) -> int:
    """Samples per clip the serving model takes."""
    shape = serving_model.inputs[0].shape
    if len(shape) != 2 or shape[1] is None:
        raise KwsError(f"serving model input must be [batch, samples], got {tuple(shape)}")
    return int(shape[1])


def sequence_parts(serving_model: keras.Model):
    """(embedding feature layer, classifier) of a speech-embedding serving model, else None."""
    frontend = serving_model.get_layer(FRONTEND_NAME)
    features = [layer for layer in frontend.layers if sequence_capable(layer)]
    if not features:
        return None
    heads = [layer for layer in serving_model.layers if layer is not frontend and layer.weights and layer.name != OUTPUT_NAME]
    return (features[0], heads[0]) if len(heads) == 1 else None


def export_saved_model(serving_model: keras.Model, out_dir: Path, labels: list[str], sample_rate: int,
                       preprocess: str = "custom", recognize: dict | None = None) -> dict:  # fmt: skip
    """Write a SavedModel (`serving_default`: audio [B, S] float32 -> {scores: [B, C]}), labels.txt and the model
    card `assets/kws.json` (labels, sample rate, clip length, streaming geometry, and `recognize`: the
    RecognizeCommands settings the model was evaluated at, when given), atomically; return the card.

    A speech-embedding model also gets `embed_sequence` and `head` signatures, so a long recording can be
    streamed on its shared 80 ms embedding sequence (`kws stream`) instead of re-embedding every window."""
    classes = int(serving_model.outputs[0].shape[-1])
    if len(labels) != classes:
        raise KwsError(f"{len(labels)} labels for a model with {classes} scores")
    samples = clip_samples_of(serving_model)
    spec = tf.TensorSpec([None, samples], tf.float32, name=INPUT_NAME)
    archive = keras.export.ExportArchive()
    archive.track(serving_model)
    archive.add_endpoint("serve", lambda audio: serving_model(audio, training=False), input_signature=[spec])
    parts = sequence_parts(serving_model)
    streaming = None
    if parts is not None:
        features, head = parts
        window = features.steps_for(samples)
        hop, span = features.stream_geometry
        streaming = {"hop": int(hop), "span": int(span), "window_vectors": int(window)}
        archive.add_endpoint(EMBED_SIGNATURE, lambda audio: {EMBEDDINGS_NAME: features.sequence(audio)},
                             input_signature=[tf.TensorSpec([1, None], tf.float32, name=INPUT_NAME)])  # fmt: skip
        archive.add_endpoint(HEAD_SIGNATURE, lambda embeddings: {OUTPUT_NAME: tf.nn.softmax(head(embeddings, training=False))},
                             input_signature=[tf.TensorSpec([None, window, features.embedding_dim], tf.float32,
                                                            name=EMBEDDINGS_NAME)])  # fmt: skip
    with atomic_dir(out_dir) as tmp:
        archive.write_out(str(tmp), verbose=False)
        (tmp / LABELS_FILE).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
        card = model_card(labels, sample_rate, samples, preprocess, streaming, recognize)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / CARD_FILE).write_text(json.dumps(card, indent=2), encoding="utf-8")
        check_signature(tmp, samples, classes)
    return card


def check_signature(saved_model_dir: Path, clip_samples: int, classes: int) -> None:
    """Raise KwsError unless `serving_default` is exactly audio [None, S] float32 -> {scores: [None, C] float32}."""
    fn = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    want_in = {INPUT_NAME: ([None, clip_samples], tf.float32)}
    want_out = {OUTPUT_NAME: ([None, classes], tf.float32)}
    got_in = {k: (v.shape.as_list(), v.dtype) for k, v in inputs.items()}
    got_out = {k: (v.shape.as_list(), v.dtype) for k, v in outputs.items()}
    if got_in != want_in or got_out != want_out:
        raise KwsError(f"SavedModel signature is {got_in} -> {got_out}, expected {want_in} -> {want_out}")


def read_labels(saved_model_dir: Path) -> list[str]:
    """Class names in score order, from labels.txt beside the SavedModel."""
    return (Path(saved_model_dir) / LABELS_FILE).read_text(encoding="utf-8").splitlines()


_LATENCY_SCRIPT = """
import json, sys
import numpy as np
from pipeline.export.tflite import latency_ms, set_tf_threads
threads = int(sys.argv[3])
applied = set_tf_threads(threads)  # before the SavedModel loads: TF sizes its pools once, at start-up
from pipeline.inference import load_saved_model
from pathlib import Path
predictor = load_saved_model(Path(sys.argv[1]), sample_rate=16000)  # the rate only labels the model: latency is per clip
result = latency_ms(predictor.scores, np.load(sys.argv[2]), repeats=int(sys.argv[4]))
print(json.dumps({**result, "tf_threads": threads, "tf_threads_applied": applied}))
"""


def saved_model_latency_ms(saved_model_dir: Path, clip: np.ndarray, threads: int = 1, repeats: int = 50) -> dict:
    """SavedModel single-clip latency in a fresh process: TF's thread pools can only be sized before TF starts."""
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = Path(tmp) / "clip.npy"
        np.save(clip_path, np.asarray(clip, np.float32).reshape(1, -1))
        args = [sys.executable, "-c", _LATENCY_SCRIPT, str(saved_model_dir), str(clip_path), str(threads), str(repeats)]
        done = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise KwsError(f"SavedModel latency subprocess failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])
