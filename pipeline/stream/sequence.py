"""Streaming on the speech embedding's own 80 ms sequence: each embedding is computed once, not once per window.

A model on `features.preprocess: speech_embedding` sees N consecutive 96-d vectors (16 for 1 s clips padded to
2 s), one every 80 ms. Over a long recording the embedding CNN runs once (in chunks, to bound memory) and gives
one vector per 80 ms hop; the head then scores every run of N consecutive vectors, i.e. one result every 80 ms.
Sliding 1 s windows instead would recompute each vector ~N times (x 80/clip_stride_ms more for a 30 ms stride).

The difference from scoring a clip alone: the head sees the recording around the word (noise, neighbouring
words) where a lone clip is zero-padded, and the mel floor (max - 80 dB) is taken per chunk, not per clip.

Time convention (as pipeline.stream.run): a result is stamped with the END of the audio its vectors cover, the
moment a live stream could produce it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EmbedFn = Callable[[np.ndarray], np.ndarray]  # float32 audio [1, S] -> embeddings [1, M, D] (no padding)
HeadFn = Callable[[np.ndarray], np.ndarray]  # embedding windows [B, N, D] -> scores [B, C]


def embedding_count(samples: int, hop: int, span: int) -> int:
    """Vectors for `samples` of audio when vector j covers samples [j * hop, j * hop + span)."""
    return 0 if samples < span else 1 + (samples - span) // hop


def embed_recording(audio: np.ndarray, embed_fn: EmbedFn, hop: int, span: int, chunk_vectors: int = 500,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:  # fmt: skip
    """The embedding sequence [M, D] of a whole recording, computed chunk by chunk (`chunk_vectors` per call).

    Chunk c holds vectors [c K, (c+1) K): the audio [c K hop, ((c+1) K - 1) hop + span). Vectors depend on their
    own span only (the mel frames and CNN are aligned to `hop`), so the chunks join without seams.
    """
    audio = np.asarray(audio, np.float32)
    total = embedding_count(len(audio), hop, span)
    parts = []
    for first in range(0, total, chunk_vectors):
        count = min(chunk_vectors, total - first)
        chunk = audio[first * hop : (first + count - 1) * hop + span]
        vectors = np.asarray(embed_fn(chunk[None]), np.float32)[0]
        if vectors.shape[0] != count:
            raise ValueError(f"embed_fn gave {vectors.shape[0]} vectors for a chunk that holds {count}")
        parts.append(vectors)
        if progress is not None:
            progress(first + count, total)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def sequence_scores(
    audio: np.ndarray,
    embed_fn: EmbedFn,
    head_fn: HeadFn,
    *,
    window_vectors: int,
    hop: int,
    span: int,
    sample_rate: int,
    batch_size: int = 512,
    chunk_vectors: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N, C] of every run of `window_vectors` consecutive embeddings and its END time [N] in ms."""
    vectors = embed_recording(audio, embed_fn, hop, span, chunk_vectors, progress)
    windows = sequence_windows(vectors, window_vectors)
    if not len(windows):
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float64)
    return window_scores(windows, head_fn, batch_size), window_end_ms(len(windows), window_vectors, hop, span, sample_rate)


def sequence_windows(vectors: np.ndarray, window_vectors: int) -> np.ndarray:
    """Every run of `window_vectors` consecutive vectors of a sequence [M, D] -> [M - N + 1, N, D] (a strided view,
    no copy; [0, N, D] when the sequence is shorter than one window)."""
    if len(vectors) < window_vectors:
        return np.zeros((0, window_vectors, vectors.shape[-1] if vectors.ndim == 2 else 0), np.float32)
    return np.lib.stride_tricks.sliding_window_view(vectors, window_vectors, axis=0).transpose(0, 2, 1)


def window_scores(windows: np.ndarray, head_fn: HeadFn, batch_size: int = 512) -> np.ndarray:
    """head_fn over windows [n, N, D] in batches of `batch_size` -> scores [n, C] float32."""
    parts = [np.asarray(head_fn(np.ascontiguousarray(windows[start : start + batch_size])), np.float32)
             for start in range(0, len(windows), batch_size)]  # fmt: skip
    return np.concatenate(parts)


def window_end_ms(count: int, window_vectors: int, hop: int, span: int, sample_rate: int) -> np.ndarray:
    """END time [count] in ms of each window of `sequence_windows`: the end of its newest vector's audio."""
    last = np.arange(count, dtype=np.float64) + window_vectors - 1  # the newest vector of each window
    return (last * hop + span) * 1000.0 / sample_rate
