"""Progress of a long step: a tqdm bar at a terminal, a plain log line every so often anywhere else.

A `dvc repro` piped to a file, a CI log or `make run | tee` is not a terminal, so a bar would stay hidden and the
corpus generation would print nothing for minutes. There the same `update` calls log one line at most every
`every_s` seconds: what is done, its share, the time spent and a linear estimate of the time left.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

log = logging.getLogger("pipeline.progress")

EVERY_S = 30.0  # seconds between two log lines when there is no terminal


def _amount(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value / 2**20:,.1f} MiB"
    return f"{int(value):,} {unit}s"


class LogProgress:
    """tqdm's `update` / `close` / context-manager interface, logging instead of drawing.

    `total` None (unknown) logs the amount done only. A line is logged by the first `update` at least `every_s`
    after the previous line (or the start); `close` logs nothing: the step's own summary follows it. The time left
    is a linear estimate once 2 % is done: of the amount, or of `total_work` when the items cost unequal time
    (`update(n, work=...)` then says how much of it each update did, e.g. estimated seconds of one core)."""

    def __init__(self, total: float | None, desc: str, unit: str, every_s: float = EVERY_S, initial: float = 0,
                 total_work: float | None = None, clock=time.monotonic) -> None:  # fmt: skip
        self.total, self.desc, self.unit, self.every_s, self.clock = total, desc, unit, every_s, clock
        self.n = self.start_n = initial
        self.total_work, self.work = total_work, 0.0
        self.started = self.last = clock()

    def update(self, n: float = 1, work: float | None = None) -> None:
        self.n += n
        self.work += n if work is None else work
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last, spent = now, now - self.started
        line = f"{self.desc}: {_amount(self.n, self.unit)}"
        if self.total:
            line += f" of {_amount(self.total, self.unit)}"
            # with unequal items the share of the work is what the time left follows
            line += f" ({100 * self.work / self.total_work:.0f} % of the estimated work)" if self.total_work else f" ({100 * self.n / self.total:.0f} %)"
        line += f", {spent:.0f} s"
        done, todo = (self.work, self.total_work) if self.total_work else (self.n - self.start_n, (self.total or 0) - self.start_n)
        if todo and 0.02 * todo <= done < todo:
            line += f", about {spent * (todo - done) / done:.0f} s left"
        log.info(line)

    def close(self) -> None:
        pass

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar(tqdm):
    """A tqdm bar that accepts (and ignores) LogProgress's `work`."""

    def update(self, n: float = 1, work: float | None = None):  # noqa: ARG002
        return super().update(n)


def progress_bar(total: float | None, desc: str, unit: str, progress: bool, every_s: float = EVERY_S,
                 total_work: float | None = None, **bar_options):  # fmt: skip
    """A tqdm bar (`bar_options` passed on) when `progress` (a terminal), else a LogProgress; both take
    `update(n, work=None)`, `close()` and `with`."""
    if progress:
        unit_options = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
        return _Bar(total=total, desc=desc, unit=unit, **unit_options, **bar_options)
    return LogProgress(total, desc, unit, every_s, initial=bar_options.get("initial", 0), total_work=total_work)
