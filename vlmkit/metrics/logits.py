"""Compare two models' next-token distributions on the same tokens (reference vs candidate).

The statistics are the ones llama.cpp's ``llama-perplexity --kl-divergence`` prints: mean KL divergence
KL(P_ref || P_cand) per position, how often the top-1 token is the same, and the largest absolute logit
difference. Computed in float64 so the KLD of a near-exact conversion (~1e-9) is not rounding noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kld(ref_logits: np.ndarray, cand_logits: np.ndarray) -> np.ndarray:
    """KL(P_ref || P_cand) for each position (rows), in nats."""
    lp, lq = log_softmax(ref_logits), log_softmax(cand_logits)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


@dataclass(frozen=True)
class LogitStats:
    n_positions: int
    max_abs_diff: float
    mean_kld: float
    max_kld: float
    same_top1: float        # fraction of positions with the same argmax
    rms_dp: float           # RMS change of the probability of the reference top-1 token

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def logit_stats(ref_logits: np.ndarray, cand_logits: np.ndarray) -> LogitStats:
    ref = np.asarray(ref_logits, dtype=np.float64)
    cand = np.asarray(cand_logits, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"logit shapes differ: {ref.shape} vs {cand.shape}")
    k = kld(ref, cand)
    top = ref.argmax(-1)
    p_ref = np.exp(log_softmax(ref))[np.arange(len(top)), top]
    p_cand = np.exp(log_softmax(cand))[np.arange(len(top)), top]
    return LogitStats(
        n_positions=int(ref.shape[0]),
        max_abs_diff=float(np.abs(ref - cand).max()),
        mean_kld=float(k.mean()),
        max_kld=float(k.max()),
        same_top1=float((top == cand.argmax(-1)).mean()),
        rms_dp=float(np.sqrt(((p_ref - p_cand) ** 2).mean())),
    )


def sequence_agreement(ref: Sequence[int], cand: Sequence[int]) -> tuple[int, int | None]:
    """(number of equal positions, index of the first difference or None)."""
    same = sum(a == b for a, b in zip(ref, cand))
    first = next((i for i, (a, b) in enumerate(zip(ref, cand)) if a != b), None)
    if first is None and len(ref) != len(cand):
        first = min(len(ref), len(cand))
    return same, first
