"""Hard negatives: the windows of long training recordings where the first round's head fires far from any keyword.

The idea is openWakeWord's (dscripka/openWakeWord: retrain on the false positives a model makes on long negative
audio) applied to this pipeline's own recordings: a clip classifier sees each word alone and centred, a stream
shows it every 80 ms window, most of which hold the end of one word and the start of the next, or noise. The
first round's head scores `train.hard_negatives.hours` hours of recordings made as the evaluate stage makes its
own (`pipeline.stream.recording.make_recording`, the `evaluate.streaming` settings) but of *training* clips and
training noise, on the embedding's 80 ms sequence (`pipeline.stream.sequence`, the streaming path). A window is a
hard negative when a keyword class scores above `min_score` while its centre is more than `exclude_ms` from the
centre of every keyword in the recording; it is labelled `_unknown_` when another word's centre is within
`unknown_within_ms`, else `_silence_`. The second round trains a new head from scratch on the training set plus
these windows (pipeline/train/loop.py).

Measured on the default (docs/experiments.md): 2 h at 0.7 and 1,200 ms mine ~600 windows; over 6 head seeds the
testing recording's best within 10 false alarms/h went 50.0 -> 59.8 %, real_dev clips -0.26 pt.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import artifacts
from pipeline.config import SILENCE_LABEL, UNKNOWN_LABEL, Params
from pipeline.errors import DataError

log = logging.getLogger(__name__)
SEED_OFFSET = 1000  # recording h of the training set uses seed params.seed + SEED_OFFSET + h (evaluate's use 0-3+)


@dataclass
class Recording:
    """One training recording on the embedding's sequence: vectors [M, 96], the windows' centres [M - N + 1] in
    ms, and its truth (label, time_ms = clip end) as `make_recording` returns it."""

    vectors: np.ndarray
    centres_ms: np.ndarray
    truth: pd.DataFrame


@dataclass
class Mined:
    """The hard negatives: embedding windows [K, N, 96] float32 and their labels [K] int32 (indices into labels)."""

    windows: np.ndarray
    labels: np.ndarray

    def counts(self, label_names: list[str]) -> dict[str, int]:
        """Windows per label, e.g. {"_unknown_": 520, "_silence_": 90}."""
        return {name: int((self.labels == label_names.index(name)).sum()) for name in (UNKNOWN_LABEL, SILENCE_LABEL)}


def recording_seconds(hours: float) -> list[float]:
    """Lengths in s of the recordings `hours` are made of: ceil(hours) recordings of equal length, at most 1 h."""
    count = math.ceil(hours)
    return [hours * 3600.0 / count] * count if count else []


def training_recordings(params: Params) -> list[Recording]:
    """Make and embed the `train.hard_negatives.hours` training recordings (about 6 s per hour on 2 cores).

    Raises DataError naming the split output when it is missing, or when the training set lacks the clips a
    recording needs (keywords; `_unknown_` clips while `evaluate.streaming.unknown_fraction` > 0)."""
    import tensorflow as tf

    from pipeline.features.layers import feature_layer
    from pipeline.stream.recording import make_recording
    from pipeline.stream.sequence import embed_recording, window_end_ms

    feat, paths = params.features, params.paths
    clips = np.load(artifacts.SET_AUDIO.require(paths, set="training"), mmap_mode="r")
    labels = np.load(artifacts.SET_LABELS.require(paths, set="training"))
    noise = np.load(artifacts.SET_BACKGROUND.require(paths, set="training"))
    layer = feature_layer(feat)  # the speech embedding (the params check allows hours only with it)
    sequence = tf.function(layer.sequence, input_signature=[tf.TensorSpec([1, None], tf.float32)])
    hop, span = layer.stream_geometry
    window = layer.steps_for(feat.clip_samples)
    half_window_ms = ((window - 1) * hop + span) * 500.0 / feat.sample_rate
    recordings = []
    for hour, seconds in enumerate(recording_seconds(params.train.hard_negatives.hours)):
        settings = params.evaluate.streaming.model_copy(update={"recording_seconds": seconds})
        try:
            audio, truth = make_recording(clips, labels, params.labels, noise, settings, feat.sample_rate,
                                          params.seed + SEED_OFFSET + hour)  # fmt: skip
        except ValueError as error:
            raise DataError(f"train.hard_negatives: a recording of the training set ({paths.split}): {error}") from None
        vectors = embed_recording(audio, lambda a: sequence(a).numpy(), hop, span)
        count = max(len(vectors) - window + 1, 0)
        centres = window_end_ms(count, window, hop, span, feat.sample_rate) - half_window_ms
        recordings.append(Recording(vectors, centres, truth))
    return recordings


def select(scores: np.ndarray, centres_ms: np.ndarray, truth: pd.DataFrame, label_names: list[str], params: Params,
           ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Which windows of one recording are hard negatives, and as what.

    scores [n, C] (softmax, classes in `label_names` order), centres_ms [n] (each window's centre), truth (label,
    time_ms = clip end) -> (window indices [K] int64, label indices [K] int32: `_unknown_` or `_silence_`)."""
    mining, clip_ms = params.train.hard_negatives, params.features.clip_duration_ms
    words = truth["time_ms"].to_numpy(np.float64) - clip_ms / 2  # each placed clip's centre
    is_keyword = ~truth["label"].isin([SILENCE_LABEL, UNKNOWN_LABEL]).to_numpy()

    def distance(centres: np.ndarray) -> np.ndarray:  # ms from each window to the nearest of `centres`
        if not len(centres):
            return np.full(len(centres_ms), np.inf)
        return np.abs(centres_ms[:, None] - centres[None, :]).min(axis=1)

    keyword_ids = np.array([i for i, name in enumerate(label_names) if name not in (SILENCE_LABEL, UNKNOWN_LABEL)])
    top = scores.argmax(axis=1)
    fired = np.isin(top, keyword_ids) & (scores.max(axis=1) > mining.min_score)
    rows = np.flatnonzero(fired & (distance(words[is_keyword]) > mining.exclude_ms))
    near_word = distance(words[~is_keyword])[rows] <= mining.unknown_within_ms
    as_label = np.where(near_word, label_names.index(UNKNOWN_LABEL), label_names.index(SILENCE_LABEL)).astype(np.int32)
    return rows, as_label


def mine(model, recordings: list[Recording], params: Params, batch_size: int = 2048) -> Mined:
    """Score every window of the recordings with `model` (features [B, N, 96] -> logits) and keep the hard
    negatives (`select`), in recording and time order."""
    import tensorflow as tf

    from pipeline.stream.sequence import sequence_windows, window_scores

    window = params.features.feature_shape[0]
    found_x, found_y = [], []
    for recording in recordings:
        windows = sequence_windows(recording.vectors, window)
        scores = window_scores(windows, lambda x: tf.nn.softmax(model(x, training=False)).numpy(), batch_size)
        rows, labels = select(scores, recording.centres_ms, recording.truth, params.labels, params)
        found_x.append(np.ascontiguousarray(windows[rows], np.float32))
        found_y.append(labels)
    shape = (0, *params.features.feature_shape)
    return Mined(np.concatenate(found_x) if found_x else np.zeros(shape, np.float32),
                 np.concatenate(found_y) if found_y else np.zeros(0, np.int32))  # fmt: skip
