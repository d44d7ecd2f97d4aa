"""vlmkit.metrics.kld / paired against independent references: torch's KL divergence and log-softmax,
a line-by-line float64 transcription of llama-perplexity's sums, and exact binomial tails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlmkit.metrics.kld import format_summary, kld_by_position, summarize, token_stats
from vlmkit.metrics.paired import binomial_two_sided, exact_mcnemar


def _logits(seed: int, n: int = 400, vocab: int = 97, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    ref = rng.normal(scale=3, size=(n, vocab)).astype(np.float32)
    cand = (ref + rng.normal(scale=noise, size=ref.shape)).astype(np.float32)
    return ref, cand, rng.integers(0, vocab, n)


def test_token_stats_match_torch():
    ref, cand, targets = _logits(0)
    stats = token_stats(ref, cand, targets)
    lp_ref = torch.log_softmax(torch.from_numpy(ref).double(), -1)
    lp_cand = torch.log_softmax(torch.from_numpy(cand).double(), -1)
    kld = torch.nn.functional.kl_div(lp_cand, lp_ref, reduction="none", log_target=True).sum(-1)
    np.testing.assert_allclose(stats.kld, kld.numpy(), rtol=1e-10, atol=1e-14)
    rows = torch.arange(len(targets))
    np.testing.assert_allclose(stats.nll_ref, -lp_ref[rows, targets].numpy(), rtol=1e-12)
    np.testing.assert_allclose(stats.p_diff, (lp_cand[rows, targets].exp() - lp_ref[rows, targets].exp()).numpy(),
                               atol=1e-14)
    assert stats.same_top.tolist() == (ref.argmax(-1) == cand.argmax(-1)).tolist()


def test_summary_is_llama_perplexity_arithmetic():
    """The aggregate formulas, transcribed from perplexity.cpp's kl_divergence() with its running sums."""
    ref, cand, targets = _logits(1)
    stats = token_stats(ref, cand, targets)
    s = summarize(stats)
    n = len(stats)
    sums = {name: float(np.sum(v)) for name, v in (
        ("nll", stats.nll_cand), ("nll2", stats.nll_cand ** 2), ("base", stats.nll_ref), ("base2", stats.nll_ref ** 2),
        ("cross", stats.nll_cand * stats.nll_ref), ("kld", stats.kld), ("kld2", stats.kld ** 2),
        ("dp", stats.p_diff), ("dp2", stats.p_diff ** 2), ("dp4", stats.p_diff ** 4))}

    def mean_unc(total, total2):
        f = total / n
        df = total2 / n - f * f
        return f, math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0

    log_ppl, log_ppl_unc = mean_unc(sums["nll"], sums["nll2"])
    log_base, log_base_unc = mean_unc(sums["base"], sums["base2"])
    cov = (sums["cross"] / n - sums["nll"] / n * sums["base"] / n) / (n - 1)
    assert s.ppl_cand == pytest.approx(math.exp(log_ppl), rel=1e-12)
    assert s.ppl_ref_unc == pytest.approx(math.exp(log_base) * log_base_unc, rel=1e-9)
    assert s.cor_ln_ppl == pytest.approx(cov / (log_ppl_unc * log_base_unc), rel=1e-9)
    assert s.ln_ppl_ratio_unc == pytest.approx(math.sqrt(log_ppl_unc ** 2 + log_base_unc ** 2 - 2 * cov), rel=1e-9)
    assert (s.kld_mean, s.kld_unc) == pytest.approx(mean_unc(sums["kld"], sums["kld2"]), rel=1e-9)
    mse, mse_unc = mean_unc(sums["dp2"], sums["dp4"])
    assert s.rms_dp == pytest.approx(math.sqrt(mse), rel=1e-12)
    assert s.rms_dp_unc == pytest.approx(0.5 / math.sqrt(mse) * mse_unc, rel=1e-9)
    same = float(stats.same_top.mean())
    assert s.same_top_unc == pytest.approx(math.sqrt(same * (1 - same) / (n - 1)), rel=1e-12)
    values = np.sort(stats.kld)
    p = 0.99 * (n - 1)
    assert s.kld_percentiles["99.0%"] == pytest.approx((1 - p % 1) * values[int(p)] + p % 1 * values[int(p) + 1])
    assert s.kld_percentiles["Maximum"] == values[-1] and s.kld_percentiles["Minimum"] == values[0]
    assert "Same top p:" in format_summary(s) and "Mean    KLD:" in format_summary(s)


def test_identical_models_have_zero_divergence():
    ref, _, targets = _logits(2)
    s = summarize(token_stats(ref, ref.copy(), targets))
    assert s.kld_mean == 0 and s.same_top == 1 and s.ppl_ratio == 1 and s.rms_dp == 0


def test_kld_by_position_averages_each_position():
    ref, cand, targets = _logits(3, n=60)
    stats = token_stats(ref, cand, targets, np.arange(60) % 3)
    positions, means = kld_by_position(stats)
    assert positions.tolist() == [0, 1, 2]
    assert means[1] == pytest.approx(stats.kld[1::3].mean())


def test_exact_mcnemar_binomial_tails():
    assert binomial_two_sided(0, 6) == pytest.approx(2 / 64)
    assert binomial_two_sided(1, 5) == pytest.approx(2 * 7 / 64)
    assert binomial_two_sided(3, 3) == 1.0
    assert binomial_two_sided(0, 0) == 1.0
    first = [True] * 10 + [False] * 2 + [True] * 1 + [False] * 9
    second = [True] * 10 + [True] * 2 + [False] * 1 + [True] * 9
    test = exact_mcnemar(first, second)
    assert (test.only_first, test.only_second, test.both_right) == (1, 11, 10)
    # P(X <= 1), X ~ Bin(12, 1/2) = 13 / 4096, two-sided
    assert test.p_value == pytest.approx(26 / 4096) and test.significant
