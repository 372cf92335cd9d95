"""Frame and shape arithmetic of every frontend, TensorFlow-free (used by pipeline.config, the layers and streaming).

Frames are computed without end padding: a clip of S samples gives 1 + (S - window) // stride frames.
The speech embedding: its mel frontend takes 512-sample windows every 160 samples (16 kHz); one 96-d vector
sees 76 mel frames and the CNN moves 8 frames (80 ms) per vector.
"""

from __future__ import annotations

EMBEDDING_MEL_WINDOW, EMBEDDING_MEL_STRIDE = 512, 160  # the pretrained embedding's STFT, in samples
EMBEDDING_MEL_BINS = 32
WINDOW_FRAMES = 76  # mel frames one embedding sees (775 ms)
HOP_FRAMES = 8  # the CNN's stride in time (three 2x max-pools): one embedding every 80 ms
EMBEDDING_DIM = 96
# streaming geometry: vector j of an unpadded sequence covers audio samples [j * STREAM_HOP, j * STREAM_HOP + STREAM_SPAN)
STREAM_HOP = HOP_FRAMES * EMBEDDING_MEL_STRIDE  # 1280 samples = 80 ms
STREAM_SPAN = (WINDOW_FRAMES - 1) * EMBEDDING_MEL_STRIDE + EMBEDDING_MEL_WINDOW  # 12,512 samples = 782 ms


def frame_count(samples: int, window: int, stride: int) -> int:
    """STFT frames of `samples` samples, `window` long every `stride` (no end padding); 0 when shorter than a window."""
    return 0 if samples < window else 1 + (int(samples) - int(window)) // int(stride)


def embedding_count(samples: int, step_frames: int = HOP_FRAMES) -> int:
    """96-d vectors the speech embedding gives for `samples` samples of (already padded) audio."""
    frames = frame_count(samples, EMBEDDING_MEL_WINDOW, EMBEDDING_MEL_STRIDE)
    return 0 if frames < WINDOW_FRAMES else (frames - WINDOW_FRAMES) // step_frames + 1
