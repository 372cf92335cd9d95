"""The seed's piecewise-constant schedule and the deterministic batch order."""

from __future__ import annotations

import numpy as np


def total_steps(steps: list[int]) -> int:
    """All training steps of a `steps: [15000, 3000]`-style schedule."""
    return int(sum(steps))


def learning_rate_at(step: int, steps: list[int], rates: list[float]) -> float:
    """Rate of the phase containing `step` (0-based): rates[i] for the i-th block of steps[i] steps."""
    boundary = 0
    for count, rate in zip(steps, rates, strict=True):
        boundary += count
        if step < boundary:
            return float(rate)
    return float(rates[-1])


def epoch_batch(epoch: np.ndarray, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of training batch `step` [batch_size] from the rows of one epoch `epoch` (repeats allowed): sorted places
    of batch_indices, so without repeats the rows themselves are sorted."""
    return epoch[np.sort(batch_indices(len(epoch), batch_size, seed, step))]


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of training batch `step`: epochs are seeded permutations, so a resumed run sees the same batches."""
    first = step * batch_size
    out = np.empty(batch_size, dtype=np.int64)
    filled = 0
    while filled < batch_size:
        epoch, offset = divmod(first + filled, n)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(batch_size - filled, n - offset)
        out[filled : filled + take] = order[offset : offset + take]
        filled += take
    return out
