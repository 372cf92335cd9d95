"""The feature layer a model sits on: the tf.signal frontend, or the frontend plus the frozen speech embedding.

Each layer declares `capabilities` ("sequence": it can embed a whole recording once for streaming)."""

from __future__ import annotations

import numpy as np

from pipeline.config import FeaturesParams

FRONTEND_NAME = "frontend"  # the exported models' name scope of the feature layer: `.../frontend_1/...` in TFLite


def scoped_frontend(layer, clip_samples: int, input_name: str = "audio"):
    """(Keras input audio [None, clip_samples] float32, its features): `layer` wrapped as the model named
    FRONTEND_NAME, the fixed scope every exported model gives its feature layer, whatever the layer is
    (pipeline/export/tflite.py finds the ops that stay float by it)."""
    import keras

    audio = keras.Input((int(clip_samples),), dtype="float32", name=input_name)
    wave = keras.Input((int(clip_samples),), dtype="float32", name="waveform")
    return audio, keras.Model(wave, layer(wave), name=FRONTEND_NAME)(audio)


def sequence_capable(layer) -> bool:
    """Whether a feature layer declares streaming on its own sequence (`sequence`, `stream_geometry`, `steps_for`)."""
    return "sequence" in getattr(layer, "capabilities", frozenset())


def feature_layer(p: FeaturesParams):
    """audio [B, samples] in [-1, 1] -> features [B, *p.feature_shape] as one Keras layer (exported with the model).
    The speech embedding loads the finetune stage's tuned convolutions when `features.embedding.finetune.convs` > 0
    (DataError naming the file when it is missing)."""
    if p.preprocess == "speech_embedding":
        from pipeline.features.embedding import EmbeddingFeatures

        layer = EmbeddingFeatures(pad_to_samples=p.sample_rate * p.embedding.pad_to_ms // 1000, align=p.embedding.align,
                                  backbone=p.embedding.backbone_file, tuned_convs=p.embedding.finetune.convs)  # fmt: skip
        layer.build((None, p.clip_samples))  # eagerly: the pretrained weights load at build time, not inside a tf.function
        return layer
    from pipeline.features.frontend import frontend_from_params

    return frontend_from_params(p)


def extract(audio: np.ndarray, p: FeaturesParams, batch_size: int = 256) -> np.ndarray:
    """Features of clips [n, samples] (int16 or float), batched, for the stages that precompute them."""
    if p.preprocess == "speech_embedding":
        from pipeline.features.embedding import compute_embeddings

        return compute_embeddings(audio, pad_to_samples=p.sample_rate * p.embedding.pad_to_ms // 1000,
                                  batch_size=batch_size, align=p.embedding.align,
                                  backbone=p.embedding.backbone_file, tuned_convs=p.embedding.finetune.convs)  # fmt: skip
    from pipeline.features.frontend import compute_features

    return compute_features(audio, p, batch_size=batch_size)
