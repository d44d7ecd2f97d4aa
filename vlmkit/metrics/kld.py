"""llama-perplexity's KL-divergence statistics from two models' logits over the same token ids.

The numbers and formulas of llama.cpp's ``llama-perplexity --kl-divergence`` (``tools/perplexity/perplexity.cpp``,
``kl_divergence``): per scored position (its logits predict the next token) the reference's and the
candidate's negative log-likelihood of that token, KL(P_ref || P_cand), Δp = p_cand(token) - p_ref(token) and
whether the two top-1 tokens agree; summarized as PPL of each ± uncertainty, Cor(ln PPL), ln(PPL ratio) ±,
PPL ratio and difference ±, mean KLD ± uncertainty and percentiles, Δp statistics, RMS Δp ± and same top-p ±.

Deliberate differences from llama.cpp: log-softmax in float64 over the full reference distribution, where
llama.cpp stores the reference's log-probabilities as uint16 steps over [max - 16, max] and drops terms below
e^-16. Both give the same KLD down to ~1e-5; only the float64 form can show a near-exact conversion's 1e-9.
Hand-written because no maintained Python library computes these statistics (llama.cpp's are C++ only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vlmkit.metrics.logits import log_softmax

KLD_PERCENTILES = (("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.90),
                   ("Median", 0.5), ("10.0%", 0.10), ("5.0%", 0.05), ("1.0%", 0.01), ("0.1%", 0.001),
                   ("Minimum", 0.0))
DP_PERCENTILES = (("Maximum", 1.0), ("99.9%", 0.999), ("99.0%", 0.99), ("95.0%", 0.95), ("90.0%", 0.90),
                  ("75.0%", 0.75), ("Median", 0.5), ("25.0%", 0.25), ("10.0%", 0.10), ("5.0%", 0.05),
                  ("1.0%", 0.01), ("0.1%", 0.001), ("Minimum", 0.0))
ROWS_PER_BLOCK = 64  # float64 copies of [rows, vocab] logits are made a block at a time


@dataclass
class TokenStats:
    """Per scored position, in order (concatenate the chunks of a run with ``TokenStats.join``)."""

    nll_ref: np.ndarray
    nll_cand: np.ndarray
    kld: np.ndarray
    p_diff: np.ndarray
    same_top: np.ndarray   # bool
    position: np.ndarray   # position of the scored logits inside its chunk / prompt

    def __len__(self) -> int:
        return len(self.kld)

    @staticmethod
    def join(parts: list[TokenStats]) -> TokenStats:
        if not parts:
            empty = np.zeros(0)
            return TokenStats(empty, empty, empty, empty, empty.astype(bool), empty.astype(int))
        return TokenStats(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                            ("nll_ref", "nll_cand", "kld", "p_diff", "same_top", "position")))


def token_stats(ref: np.ndarray, cand: np.ndarray, targets: np.ndarray,
                positions: np.ndarray | None = None) -> TokenStats:
    """``ref`` / ``cand``: [n, vocab] logits; ``targets``: the n tokens they predict."""
    ref, cand, targets = np.asarray(ref), np.asarray(cand), np.asarray(targets, dtype=np.int64)
    if ref.shape != cand.shape or ref.ndim != 2 or len(targets) != ref.shape[0]:
        raise ValueError(f"logit shapes differ: reference {ref.shape}, candidate {cand.shape}, "
                         f"{len(targets)} targets")
    blocks = [_block(ref[i:i + ROWS_PER_BLOCK], cand[i:i + ROWS_PER_BLOCK], targets[i:i + ROWS_PER_BLOCK])
              for i in range(0, len(targets), ROWS_PER_BLOCK)]
    if not blocks:
        return TokenStats.join([])
    nll_ref, nll_cand, kld, p_diff, same = (np.concatenate(column) for column in zip(*blocks))
    where = np.arange(len(targets)) if positions is None else np.asarray(positions)
    return TokenStats(nll_ref, nll_cand, kld, p_diff, same, where)


def _block(ref: np.ndarray, cand: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    lp_ref, lp_cand = log_softmax(ref), log_softmax(cand)
    rows = np.arange(len(targets))
    nll_ref, nll_cand = -lp_ref[rows, targets], -lp_cand[rows, targets]
    kld = (np.exp(lp_ref) * (lp_ref - lp_cand)).sum(axis=-1)
    p_diff = np.exp(-nll_cand) - np.exp(-nll_ref)
    same = lp_ref.argmax(axis=-1) == lp_cand.argmax(axis=-1)
    return nll_ref, nll_cand, np.maximum(kld, 0.0), p_diff, same


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """llama.cpp's ``mean_and_uncertainty``: mean and sqrt(var / (n - 1)), 0 when n <= 10."""
    n = len(values)
    if n < 1:
        return 0.0, 0.0
    mean = float(np.sum(values) / n)
    var = float(np.sum(np.square(values)) / n - mean * mean)
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def _covariance(a: np.ndarray, b: np.ndarray) -> float:
    n = len(a)
    if n < 10:
        return 0.0
    return float((np.sum(a * b) / n - (np.sum(a) / n) * (np.sum(b) / n)) / (n - 1))


def percentile(values: np.ndarray, fraction: float) -> float:
    """llama.cpp's interpolation (numpy's default 'linear' method)."""
    return float(np.quantile(values, fraction)) if len(values) else float("nan")


@dataclass
class KldSummary:
    """What ``llama-perplexity --kl-divergence`` prints; PPL(Q) is the candidate, PPL(base) the reference."""

    n_tokens: int
    ppl_cand: float
    ppl_cand_unc: float
    ppl_ref: float
    ppl_ref_unc: float
    cor_ln_ppl: float
    ln_ppl_ratio: float
    ln_ppl_ratio_unc: float
    ppl_ratio: float
    ppl_ratio_unc: float
    ppl_diff: float
    ppl_diff_unc: float
    kld_mean: float
    kld_unc: float
    kld_percentiles: dict[str, float] = field(default_factory=dict)
    dp_mean: float = 0.0
    dp_unc: float = 0.0
    dp_percentiles: dict[str, float] = field(default_factory=dict)
    rms_dp: float = 0.0
    rms_dp_unc: float = 0.0
    same_top: float = 0.0
    same_top_unc: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(stats: TokenStats) -> KldSummary:
    n = len(stats)
    if n < 2:
        raise ValueError(f"{n} scored tokens: too few for statistics")
    ln_cand, unc_cand = mean_and_uncertainty(stats.nll_cand)
    ln_ref, unc_ref = mean_and_uncertainty(stats.nll_ref)
    cov = _covariance(stats.nll_cand, stats.nll_ref)
    ppl_cand, ppl_ref = math.exp(ln_cand), math.exp(ln_ref)
    ratio_unc = math.sqrt(max(unc_cand ** 2 + unc_ref ** 2 - 2 * cov, 0.0))
    ppl_cand_unc, ppl_ref_unc = ppl_cand * unc_cand, ppl_ref * unc_ref
    kld_mean, kld_unc = mean_and_uncertainty(stats.kld)
    dp_mean, dp_unc = mean_and_uncertainty(stats.p_diff)
    mse, mse_unc = mean_and_uncertainty(np.square(stats.p_diff))
    rms = math.sqrt(mse)
    same = float(np.mean(stats.same_top))
    return KldSummary(
        n_tokens=n, ppl_cand=ppl_cand, ppl_cand_unc=ppl_cand_unc, ppl_ref=ppl_ref, ppl_ref_unc=ppl_ref_unc,
        cor_ln_ppl=cov / (unc_cand * unc_ref) if unc_cand and unc_ref else float("nan"),
        ln_ppl_ratio=ln_cand - ln_ref, ln_ppl_ratio_unc=ratio_unc,
        ppl_ratio=math.exp(ln_cand - ln_ref), ppl_ratio_unc=math.exp(ln_cand - ln_ref) * ratio_unc,
        ppl_diff=ppl_cand - ppl_ref,
        ppl_diff_unc=math.sqrt(max(ppl_cand_unc ** 2 + ppl_ref_unc ** 2 - 2 * ppl_cand * ppl_ref * cov, 0.0)),
        kld_mean=kld_mean, kld_unc=kld_unc,
        kld_percentiles={name: percentile(stats.kld, q) for name, q in KLD_PERCENTILES},
        dp_mean=dp_mean, dp_unc=dp_unc,
        dp_percentiles={name: percentile(stats.p_diff, q) for name, q in DP_PERCENTILES},
        rms_dp=rms, rms_dp_unc=0.5 / rms * mse_unc if rms > 0 else 0.0,
        same_top=same, same_top_unc=math.sqrt(same * (1 - same) / (n - 1)))


def perplexity(nll: np.ndarray) -> tuple[float, float]:
    """PPL and its uncertainty from per-token negative log-likelihoods (llama-perplexity's final estimate)."""
    mean, unc = mean_and_uncertainty(np.asarray(nll, dtype=np.float64))
    return math.exp(mean), math.exp(mean) * unc


def format_summary(s: KldSummary) -> str:
    """The summary in llama-perplexity's layout (so the two outputs can be read side by side)."""
    lines = ["====== Perplexity statistics ======",
             f"Mean PPL(Q)                   : {s.ppl_cand:10.6f} ± {s.ppl_cand_unc:10.6f}",
             f"Mean PPL(base)                : {s.ppl_ref:10.6f} ± {s.ppl_ref_unc:10.6f}",
             f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * s.cor_ln_ppl:6.2f}%",
             f"Mean ln(PPL(Q)/PPL(base))     : {s.ln_ppl_ratio:10.6f} ± {s.ln_ppl_ratio_unc:10.6f}",
             f"Mean PPL(Q)/PPL(base)         : {s.ppl_ratio:10.6f} ± {s.ppl_ratio_unc:10.6f}",
             f"Mean PPL(Q)-PPL(base)         : {s.ppl_diff:10.6f} ± {s.ppl_diff_unc:10.6f}", "",
             "====== KL divergence statistics ======",
             f"Mean    KLD: {s.kld_mean:10.6g} ± {s.kld_unc:10.6g}"]
    lines += [f"{name:<7} KLD: {value:10.6g}" for name, value in s.kld_percentiles.items()]
    lines += ["", "====== Token probability statistics ======",
              f"Mean    Δp: {100 * s.dp_mean:6.3f} ± {100 * s.dp_unc:5.3f} %"]
    lines += [f"{name:<7} Δp: {100 * value:6.3f}%" for name, value in s.dp_percentiles.items()]
    lines += [f"RMS Δp    : {100 * s.rms_dp:6.3f} ± {100 * s.rms_dp_unc:5.3f} %",
              f"Same top p: {100 * s.same_top:6.3f} ± {100 * s.same_top_unc:5.3f} %"]
    return "\n".join(lines)


def kld_by_position(stats: TokenStats) -> tuple[np.ndarray, np.ndarray]:
    """(positions, mean KLD at each position): how the error grows along the context."""
    positions = np.unique(stats.position)
    means = np.array([stats.kld[stats.position == p].mean() for p in positions])
    return positions, means
