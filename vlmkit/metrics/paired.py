"""Paired significance of two models answering the same questions: the exact McNemar test.

Only questions where the two disagree on correctness carry information: ``b`` = right before and wrong
after, ``c`` = wrong before and right after. Under "no real difference" each such question is a fair coin,
so the two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))`` for X ~ Binomial(b + c, 1/2) (the exact form of
McNemar's test, i.e. the sign test on the discordant pairs). Hand-written: a dozen lines of exact integer
arithmetic, where scipy / statsmodels would be a heavy dependency for one binomial tail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import comb


@dataclass(frozen=True)
class McNemar:
    both_right: int
    both_wrong: int
    only_first: int    # b: right in the first run, wrong in the second
    only_second: int   # c: wrong in the first run, right in the second
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    def as_dict(self) -> dict:
        return {**asdict(self), "significant_at_5pct": self.significant}


def exact_mcnemar(first: list[bool], second: list[bool]) -> McNemar:
    """Paired correctness of the same questions in two runs."""
    if len(first) != len(second):
        raise ValueError(f"paired test needs equal lengths, got {len(first)} and {len(second)}")
    b = sum(1 for x, y in zip(first, second) if x and not y)
    c = sum(1 for x, y in zip(first, second) if y and not x)
    both = sum(1 for x, y in zip(first, second) if x and y)
    return McNemar(both, len(first) - both - b - c, b, c, binomial_two_sided(b, c))


def binomial_two_sided(b: int, c: int) -> float:
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)
