"""Feature tasks for pipeline/compute.py: one chunk of one set's clips, its clean features and augmented views.

A task is (set name, first clip, end clip, views) and reads only its chunk of `<split>/<set>_audio.npy`
(memory-mapped), so memory stays bounded and any worker computes the same numbers: chunks are fixed at
CHUNK clips (TensorFlow batches them the same way in every worker) and training view v of the chunk starting
at clip s is augmented with seed (params seed, v * 1_000_003 + s), never a worker's order. With
`embedding.view_context: noise` an augmented view is built in the whole padded window the embedding sees. With
`embedding.integer_views` a training task returns 2 x views: the float views, then the same waveforms through
the int8 backbone (pipeline/export/integer.py) at `<features>/backbone_int8.tflite`.
On a cluster, the workspace (data/split) must be at the same absolute path on every node (a shared volume).
"""

from __future__ import annotations

import numpy as np

from pipeline import artifacts
from pipeline.config import FeaturesParams, Paths

CHUNK = 256  # clips per task and per TensorFlow batch
VIEW_SEED_STRIDE = 1_000_003


def chunk_tasks(set_name: str, clips: int, views: int = 1) -> list[tuple[str, int, int, int]]:
    """(set, start, stop, views) for every CHUNK-clip slice of a set of `clips` clips."""
    return [(set_name, start, min(start + CHUNK, clips), views) for start in range(0, clips, CHUNK)]


def output_views(features: FeaturesParams, set_name: str, views: int) -> int:
    """Arrays a chunk task of `views` views returns per clip: the training set's views are embedded twice, by the
    float and by the int8 backbone, with `features.embedding.integer_views`."""
    return 2 * views if set_name == "training" and features.embedding.integer_views else views


class FeatureWorker:
    """Builds the frontend (and the embedding) once per process; called on a chunk task -> [views, n, *shape]."""

    def __init__(self, features: FeaturesParams, seed: int, paths: Paths, threads: int | None = None) -> None:
        import tensorflow as tf

        if threads:  # a Ray worker owns one CPU: TensorFlow must not spread over the node's cores
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.features, self.seed, self.paths = features, seed, paths  # paths.split, paths.features: absolute
        self.threads = threads
        self._augment = self._integer = None

    def _audio(self, set_name: str) -> np.ndarray:
        return np.load(artifacts.SET_AUDIO.require(self.paths, set=set_name), mmap_mode="r")

    def _augmenter(self):
        if self._augment is None:
            from pipeline.features.augment import make_augmenter

            noise = np.load(artifacts.SET_BACKGROUND.require(self.paths, set="training")).astype(np.float32) / 32768.0
            self._augment = make_augmenter(self.features, noise, self.seed)
        return self._augment

    def _integer_backbone(self):
        if self._integer is None:
            import os

            from pipeline.export.integer import IntegerBackbone

            path = artifacts.INTEGER_BACKBONE.require(self.paths)
            self._integer = IntegerBackbone(path, self.threads or os.cpu_count() or 1)
        return self._integer

    def __call__(self, task: tuple[str, int, int, int]) -> np.ndarray:
        import tensorflow as tf

        from pipeline.features.layers import extract

        set_name, start, stop, views = task
        feat = self.features
        clean = np.asarray(self._audio(set_name)[start:stop], np.float32) / 32768.0
        window = _pad(clean, _context_samples(feat), feat.embedding.align) if views > 1 else clean
        arrays = output_views(feat, set_name, views)
        integer = arrays > views
        out = np.empty((arrays, stop - start, *feat.feature_shape), np.float32)
        for view in range(views):
            clips = clean if not view else self._augmenter()(tf.constant(window), view * VIEW_SEED_STRIDE + start).numpy()
            out[view] = extract(clips, feat, CHUNK)
            if integer:
                out[views + view] = self._integer_backbone()(clips)
        return out


def _context_samples(feat: FeaturesParams) -> int:
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
