"""Paired comparison of two models on the same clips: McNemar's exact test, Wilson intervals, the promotion gate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pipeline.errors import KwsError

Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion `correct / total` (both ends in [0, 1]; (0, 1) for total 0)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of `b` against `b + c` discordant pairs at 1/2.

    `b`: clips only the first model gets right; `c`: clips only the second gets right. 1.0 when b = c = 0.
    """
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class Paired:
    """Two models' correctness on the clips both were scored on."""

    set_name: str
    clips: int
    challenger_correct: int
    champion_correct: int
    only_challenger: int  # clips the challenger gets right and the champion wrong
    only_champion: int

    @property
    def challenger_accuracy(self) -> float:
        return self.challenger_correct / self.clips

    @property
    def champion_accuracy(self) -> float:
        return self.champion_correct / self.clips

    @property
    def difference(self) -> float:
        """Challenger minus champion accuracy, in [−1, 1]."""
        return self.challenger_accuracy - self.champion_accuracy

    @property
    def p_value(self) -> float:
        return mcnemar_exact(self.only_challenger, self.only_champion)

    def describe(self) -> str:
        return (f"{self.set_name}, {self.clips} paired clips: challenger {100 * self.challenger_accuracy:.2f} % vs champion "
                f"{100 * self.champion_accuracy:.2f} % ({100 * self.difference:+.2f} pt); discordant {self.only_challenger} "
                f"won / {self.only_champion} lost, McNemar exact p = {self.p_value:.3g}")  # fmt: skip


def pair(set_name: str, challenger: pd.DataFrame, champion: pd.DataFrame) -> Paired:
    """Join two per-clip tables (columns `clip`, `correct`) on `clip`.

    Raises KwsError when they share no clip (scored on different data: no paired comparison possible).
    """
    for frame, who in ((challenger, "challenger"), (champion, "champion")):
        if not {"clip", "correct"} <= set(frame.columns):
            raise KwsError(f"{who}'s per-clip results on {set_name} lack the columns clip, correct")
    both = challenger[["clip", "correct"]].merge(champion[["clip", "correct"]], on="clip", suffixes=("_new", "_old"))
    if both.empty:
        raise KwsError(f"challenger and champion share no clip of {set_name}: they were scored on different data")
    new, old = both["correct_new"].astype(bool), both["correct_old"].astype(bool)
    return Paired(set_name, len(both), int(new.sum()), int(old.sum()), int((new & ~old).sum()), int((~new & old).sum()))


def refusals(paired: Paired | None, alarms: tuple[float | None, float | None], require_significant: bool,
             alpha: float = 0.05) -> list[str]:  # fmt: skip
    """Why a challenger must not replace the champion (empty: it may).

    Refused when lower on the paired accuracy, when higher on streaming false alarms per hour (`alarms` =
    (challenger, champion); skipped where either is unknown), and with `require_significant` when the accuracy gain is
    not significant at `alpha` (or could not be tested).
    """
    reasons = []
    if paired is not None and paired.difference < 0:
        reasons.append(f"lower accuracy on {paired.set_name}: {100 * paired.challenger_accuracy:.2f} % vs "
                       f"{100 * paired.champion_accuracy:.2f} % ({100 * paired.difference:+.2f} pt, p = {paired.p_value:.3g})")  # fmt: skip
    new, old = alarms
    if new is not None and old is not None and new > old:
        reasons.append(f"more streaming false alarms: {new:.1f}/h vs {old:.1f}/h")
    if require_significant:
        if paired is None:
            reasons.append("no per-clip results to test the gain (--require-significant)")
        elif paired.difference <= 0 or paired.p_value >= alpha:
            reasons.append(f"gain not significant: McNemar exact p = {paired.p_value:.3g} (need < {alpha} and a gain)")
    return reasons
