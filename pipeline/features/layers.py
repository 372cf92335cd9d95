"""The feature layer a model sits on: the tf.signal frontend, or the frontend plus the frozen speech embedding."""

from __future__ import annotations

import numpy as np

from pipeline.config import FeaturesParams


def feature_layer(p: FeaturesParams):
    """audio [B, samples] in [-1, 1] -> features [B, *p.feature_shape] as one Keras layer (exported with the model)."""
    if p.preprocess == "speech_embedding":
        from pipeline.features.embedding import EmbeddingFeatures

        layer = EmbeddingFeatures(pad_to_samples=p.sample_rate * p.embedding.pad_to_ms // 1000, align=p.embedding.align)
        layer.build((None, p.clip_samples))  # eagerly: the pretrained weights load at build time, not inside a tf.function
        return layer
    from pipeline.features.frontend import frontend_from_params

    return frontend_from_params(p)


def extract(audio: np.ndarray, p: FeaturesParams, batch_size: int = 256) -> np.ndarray:
    """Features of clips [n, samples] (int16 or float), batched, for the stages that precompute them."""
    if p.preprocess == "speech_embedding":
        from pipeline.features.embedding import compute_embeddings

        return compute_embeddings(audio, pad_to_samples=p.sample_rate * p.embedding.pad_to_ms // 1000,
                                  batch_size=batch_size, align=p.embedding.align)  # fmt: skip
    from pipeline.features.frontend import compute_features

    return compute_features(audio, p, batch_size=batch_size)
