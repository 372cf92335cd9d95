"""The features stage: fixed features of the evaluation sets and, for a frozen backbone, augmented training views."""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from pipeline import artifacts
from pipeline.config import Params
from pipeline.fileio import atomic_path, ensure_space, write_json

log = logging.getLogger(__name__)
EVAL_SETS = ("validation", "testing")


def _load(params: Params, name: str) -> np.ndarray:
    return np.load(artifacts.SET_AUDIO.require(params.paths, set=name), mmap_mode="r")


def training_views(params: Params, progress: bool = False, batch_size: int = 256) -> np.ndarray:
    """[views, clips, *feature_shape]: view 0 clean, the others freshly shifted + noise-mixed (seeded) waveforms."""
    import tensorflow as tf

    from pipeline.features.augment import make_augmenter
    from pipeline.features.layers import extract

    feat = params.features
    audio = _load(params, "training")
    noise = np.load(artifacts.SET_BACKGROUND.require(params.paths, set="training")).astype(np.float32) / 32768.0
    augment = make_augmenter(feat, noise, params.seed)
    views = np.empty((feat.embedding.views, len(audio), *feat.feature_shape), np.float32)
    batches = [(v, i) for v in range(feat.embedding.views) for i in range(0, len(audio), batch_size)]
    context = _context_samples(feat)
    for view, start in tqdm(batches, desc="training views", disable=not progress, mininterval=2):
        clips = np.asarray(audio[start : start + batch_size], np.float32) / 32768.0
        if view:
            clips = augment(tf.constant(_pad(clips, context, feat.embedding.align)), view * 1_000_003 + start).numpy()
        views[view, start : start + len(clips)] = extract(clips, feat, batch_size)
    return views


def _context_samples(feat) -> int:
    """Samples of the window an augmented view is built in: the padded length with `view_context: noise` (shift
    and background noise then span the whole window the embedding sees), else the clip's own length."""
    if feat.embedding.view_context == "noise":
        return feat.sample_rate * feat.embedding.pad_to_ms // 1000
    return feat.clip_samples


def _pad(clips: np.ndarray, samples: int, align: str) -> np.ndarray:
    """Zero-pad clips [B, S] to `samples`, placed as pipeline.features.embedding.pad_clips places them."""
    missing = max(samples - clips.shape[1], 0)
    before = missing if align == "end" else missing // 2
    return np.pad(clips, [(0, 0), (before, missing - before)])


def features_bytes(params: Params) -> int:
    """Bytes the features stage writes (float32 features of every evaluation clip and of every training view)."""
    feat = params.features
    per_clip = 4 * int(np.prod(feat.feature_shape))
    total = sum(len(_load(params, name)) for name in EVAL_SETS) * per_clip
    if feat.preprocess == "speech_embedding":
        total += feat.embedding.views * len(_load(params, "training")) * per_clip
    return total


def run_features(params: Params, progress: bool = False) -> dict:
    """Compute the feature layer once per evaluation clip (and per training view for speech_embedding)."""
    from pipeline.features.layers import extract

    out, feat = params.paths.features, params.features
    ensure_space(out, features_bytes(params), "the features")
    description = {"params": feat.model_dump(mode="json"), "labels": params.labels, "sets": {}}
    for name in EVAL_SETS:
        features = extract(np.asarray(_load(params, name)), feat)
        with atomic_path(artifacts.SET_FEATURES.path(params.paths, set=name), ".npy") as tmp:
            np.save(tmp, features.astype(np.float32))
        description["sets"][name] = {"clips": int(features.shape[0]), "shape": list(features.shape[1:])}
    if feat.preprocess == "speech_embedding":
        views = training_views(params, progress)
        with atomic_path(artifacts.SET_FEATURES.path(params.paths, set="training"), ".npy") as tmp:
            np.save(tmp, views)
        description["sets"]["training"] = {"clips": int(views.shape[1]), "views": int(views.shape[0]),
                                           "shape": list(views.shape[2:])}  # fmt: skip
    else:
        artifacts.SET_FEATURES.path(params.paths, set="training").unlink(missing_ok=True)
    write_json(artifacts.FRONTEND.path(params.paths), description)
    return description
