"""Progress without a terminal: a log line every so often, with the share done and the time left."""

from __future__ import annotations

import logging

from tqdm import tqdm

from pipeline.progress import LogProgress, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_most_every_interval_with_share_and_time_left(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    with LogProgress(100, "generated corpus", "clip", every_s=30, clock=clock) as bar:
        clock.now = 10
        bar.update(10)
        assert caplog.messages == []  # under 30 s since the start: quiet
        clock.now = 31
        bar.update(20)
        clock.now = 40
        bar.update(20)  # 9 s after the last line: quiet
        clock.now = 61
        bar.update(50)  # done: no time left to estimate
    assert caplog.messages == ["generated corpus: 30 clips of 100 clips (30 %), 31 s, about 72 s left",
                               "generated corpus: 100 clips of 100 clips (100 %), 61 s"]  # fmt: skip
    assert bar.n == 100


def test_bytes_resumed_download_and_unknown_total(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    resumed = LogProgress(4 * 2**20, "archive.tar.gz", "B", every_s=5, initial=2**20, clock=clock)
    clock.now = 10
    resumed.update(2**20)  # 1 MiB in 10 s since the resume, 2 MiB to go
    unknown = LogProgress(None, "archive.tar.gz", "B", every_s=5, clock=clock)
    clock.now = 20
    unknown.update(3 * 2**20)
    assert caplog.messages == ["archive.tar.gz: 2.0 MiB of 4.0 MiB (50 %), 10 s, about 20 s left",
                               "archive.tar.gz: 3.0 MiB, 10 s"]  # fmt: skip


def test_a_terminal_gets_a_tqdm_bar_and_anything_else_log_lines():
    bar = progress_bar(10, "features", "clip", progress=True, disable=True)
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(10, "features", "clip", progress=False, mininterval=2), LogProgress)


def test_time_left_follows_the_work_when_items_cost_unequal_time(caplog):
    # generation: one Kokoro voice (16 clips) costs as much as thousands of espeak clips
    clock = Clock()
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    bar = LogProgress(1016, "generated corpus", "clip", every_s=30, total_work=100, clock=clock)
    clock.now = 31
    bar.update(16, work=50)  # 1.6 % of the clips, half the work
    clock.now = 62
    bar.update(1, work=1)
    early = LogProgress(1000, "features", "clip", every_s=30, clock=clock)
    clock.now = 100
    early.update(10)  # 1 % done: too early to estimate
    assert caplog.messages == ["generated corpus: 16 clips of 1,016 clips (50 % of the estimated work), 31 s, about 31 s left",
                               "generated corpus: 17 clips of 1,016 clips (51 % of the estimated work), 62 s, about 60 s left",
                               "features: 10 clips of 1,000 clips (1 %), 38 s"]  # fmt: skip
