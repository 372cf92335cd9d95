"""The integer speech-embedding backbone that `model_int8.tflite` ships, for training the head on its outputs.

Quantization-aware training of the classifier head only. The backbone is frozen, so instead of simulating its
rounding in float (fake quantization, Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", arXiv:1712.05877) the features stage runs every training view
through the very int8 backbone the freeze stage will write: the same converter and float part
(`tflite.FLOAT_SCOPE`: the spectral frontend and the backbone's first block stay float32), calibrated on the
same clips (the freeze stage's draw 0 of `freeze.representative_clips` training clips). Post-training
calibration sets each backbone tensor's range from min/max over those clips, which the head does not change,
so the backbone in this file quantizes exactly as the one inside `model_int8.tflite` (tested; freeze may still
keep another calibration draw when that scores better on validation). With `features.embedding.integer_views`
the head then trains on the float and the integer embeddings of each view in turn.

Measured (docs/experiments.md): the integer embeddings differ from the float ones by an RMSE of 2.8–3.2 (their
std is 15.7), and Gaussian noise of that size in training did not shrink the int8 loss; training on the real
integer embeddings did (default corpus, 5 head seeds: int8 on real_dev 87.65 -> 88.13 %, float unchanged).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.config import FeaturesParams, Params
from pipeline.errors import KwsError

EMBEDDINGS_OUTPUT = "embeddings"


def calibration_audio(params: Params, draw: int = 0) -> np.ndarray:
    """int8 calibration clips [n, S] float32 in [-1, 1]: `freeze.representative_clips` training clips (sorted
    rows of a draw seeded by `seed` for draw 0, by (`seed`, draw) otherwise). Raises DataError without the split."""
    audio = np.load(artifacts.SET_AUDIO.require(params.paths, set="training"), mmap_mode="r")
    rng = np.random.default_rng(params.seed if draw == 0 else [params.seed, draw])
    rows = np.sort(rng.choice(len(audio), min(params.freeze.representative_clips, len(audio)), replace=False))
    return np.asarray(audio[rows], np.float32) / 32768.0


def backbone_model(features: FeaturesParams):
    """Keras model audio [None, S] float32 -> {embeddings: [None, T, 96]}: the feature layer alone, in the scope
    build_serving_model gives it (layers.scoped_frontend), so tflite.FLOAT_SCOPE keeps the same ops float."""
    import keras

    from pipeline.features.layers import feature_layer, scoped_frontend, sequence_capable

    layer = feature_layer(features)
    if not sequence_capable(layer):
        raise KwsError(f"features.preprocess {features.preprocess!r} has no pretrained backbone to quantize; "
                       "integer views need 'speech_embedding'")  # fmt: skip
    audio, embedded = scoped_frontend(layer, features.clip_samples)
    embeddings = keras.layers.Identity(name=EMBEDDINGS_OUTPUT)(embedded)
    return keras.Model(audio, {EMBEDDINGS_OUTPUT: embeddings}, name="serving")


def write_integer_backbone(params: Params, out: Path) -> Path:
    """Convert the backbone (backbone_model) to int8 past its float part with tflite.convert, calibrated on
    calibration_audio(params, 0), and write it atomically to `out`. Raises KwsError when the conversion fails."""
    import keras
    import tensorflow as tf

    from pipeline.export.tflite import convert

    model = backbone_model(params.features)
    spec = tf.TensorSpec([None, params.features.clip_samples], tf.float32, name="audio")
    with tempfile.TemporaryDirectory(prefix="kws-backbone-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda audio: model(audio, training=False), input_signature=[spec])
        archive.write_out(tmp, verbose=False)
        convert(Path(tmp), Path(out), "int8", calibration_audio(params, 0))
    return Path(out)


class IntegerBackbone:
    """Runs an int8 backbone file (write_integer_backbone) with LiteRT: audio [B, S] float in [-1, 1] ->
    embeddings [B, T, 96] float32 ((int8 value - zero point) x scale, as the head inside model_int8.tflite reads
    them). One batched invoke per call on `num_threads` threads; integer kernels give the same values per clip
    whatever the batch."""

    def __init__(self, model_path: Path, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.clip_samples = int(self.input["shape_signature"][-1])
        self._batch = 0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        clips = np.asarray(audio, np.float32)
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise KwsError(f"expected audio [batch, {self.clip_samples}], got shape {clips.shape}")
        if len(clips) != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], list(clips.shape))
            self.interpreter.allocate_tensors()
            self._batch = len(clips)
        self.interpreter.set_tensor(self.input["index"], clips)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]), np.float32)
