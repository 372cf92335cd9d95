"""Scoring audio with a trained model: wav loading to the model's format, and the Keras scorer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import FeaturesParams
from pipeline.errors import DataError


@dataclass
class Clip:
    """A wav brought to the model's format, with what had to be changed to get there."""

    audio: np.ndarray
    notes: list[str] = field(default_factory=list)


def read_clip(path: Path, sample_rate: int, clip_samples: int | None) -> Clip:
    """Mono float32 at `sample_rate`, padded/trimmed to `clip_samples` (None: keep the length); notes say what changed."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise DataError(f"{path}: cannot read audio ({str(error).splitlines()[0]})") from None
    notes = []
    if audio.shape[1] > 1:
        notes.append(f"mixed {audio.shape[1]} channels to mono")
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
        notes.append(f"resampled {rate} Hz to {sample_rate} Hz")
    if clip_samples is not None and len(mono) != clip_samples:
        notes.append(f"{'padded' if len(mono) < clip_samples else 'trimmed'} {len(mono)} samples to {clip_samples}")
        mono = np.pad(mono, (0, max(clip_samples - len(mono), 0)))[:clip_samples]
    if not len(mono):
        raise DataError(f"{path}: the file holds no audio")
    return Clip(np.ascontiguousarray(mono, dtype=np.float32), notes)


class KerasScorer:
    """The trained features->logits model behind the shared frontend: audio [B, S] -> softmax scores [B, C]."""

    def __init__(self, model_path: Path, features: FeaturesParams, batch_size: int = 256):
        import keras
        import tensorflow as tf

        from pipeline.features.layers import feature_layer

        if not Path(model_path).exists():
            raise DataError(f"{model_path}: model not found; run the train stage first")
        self.model = keras.saving.load_model(model_path, compile=False)
        self.frontend = feature_layer(features)
        self.batch_size = batch_size

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)], reduce_retracing=True)
        def scores(audio):
            return tf.nn.softmax(self.model(self.frontend(audio), training=False))

        self._scores = scores
        self.stream_scores = None  # audio [S] -> (scores [N, C], END times [N] in ms), on the embedding sequence
        if hasattr(self.frontend, "sequence"):
            sequence = tf.function(self.frontend.sequence, input_signature=[tf.TensorSpec([1, None], tf.float32)])
            hop, span = self.frontend.stream_geometry
            window = self.frontend.steps_for(features.clip_samples)

            def stream_scores(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                from pipeline.stream.sequence import sequence_scores

                return sequence_scores(audio, lambda a: sequence(a).numpy(), self.features_scores, window_vectors=window,
                                       hop=hop, span=span, sample_rate=features.sample_rate, batch_size=batch_size)  # fmt: skip

            self.stream_scores = stream_scores

    def features_scores(self, features: np.ndarray) -> np.ndarray:
        """Softmax scores from precomputed features (the features stage's arrays)."""
        import tensorflow as tf

        out = [tf.nn.softmax(self.model(features[i : i + self.batch_size], training=False)).numpy()
               for i in range(0, len(features), self.batch_size)]  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, self.model.output_shape[-1]), np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio)
        if audio.dtype == np.int16:
            audio = audio.astype(np.float32) / 32768.0
        out = [self._scores(audio[i : i + self.batch_size].astype(np.float32)).numpy()
               for i in range(0, len(audio), self.batch_size)]  # fmt: skip
        return np.concatenate(out) if out else np.zeros((0, self.model.output_shape[-1]), np.float32)
