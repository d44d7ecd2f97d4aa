"""The demo VLM quantized on image+text calibration (the demo generator's training split, 64 questions): GPTQ and
AWQ W4 (group 128: the demo LM's widths 256 and 512 divide it, no fallback) lose less than RTN W4 on the whole
test split (600 image questions) held out; the slow test scores each on that split against the issue's budgets.

All 600, not 32: a mean KLD over a few questions is dominated by a few tokens. On the stage-3 weights RTN W4 has
0.030 on the first 160 and 0.038 on all 600, AWQ W4 0.025 and 0.029; on the stage-2 weights 32 questions could
not tell AWQ from RTN (0.0186 vs 0.0188) where 160 could (0.022 vs 0.031)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmkit.quant.pipeline import quantize

HELD_OUT = "held-out image questions"
HELD_OUT_N = 600


def _run(tmp: Path, method: str, bits: int, samples: int = 64, held_out: int = HELD_OUT_N):
    return quantize("demo", tmp / f"{method}{bits}", method=method, bits=bits, group_size=128, calib="demo",
                    samples=samples, held_out=held_out, progress=False)


@pytest.fixture(scope="module")
def w4(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    return {method: _run(tmp, method, 4) for method in ("rtn", "gptq", "awq")}


def test_demo_lm_widths_take_group_128_without_fallback(w4) -> None:
    assert all(layer["group_size"] == 128 for result in w4.values() for layer in result.layers)
    assert all("fallback" not in why for why in w4["rtn"].quantized.values())


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_gptq_and_awq_beat_rtn_on_held_out_image_questions(w4, method: str) -> None:
    ours, rtn = w4[method].quality[HELD_OUT], w4["rtn"].quality[HELD_OUT]
    assert ours["n_samples"] == HELD_OUT_N
    assert ours["mean_kld"] < 0.8 * rtn["mean_kld"]


BUDGETS = {("rtn", 8): 0.5, ("gptq", 4): 2.0, ("awq", 4): 2.0}  # the issue's: MME-style points from fp32


@pytest.mark.slow
def test_demo_mme_totals_within_the_issues_budgets(tmp_path: Path) -> None:
    """About 5 minutes on 2 cores: three quantizations and four full test-split scores (600 questions)."""
    from vlmkit.eval.vqa import evaluate, split_questions

    questions = split_questions("test")
    fp32 = evaluate(questions, "demo")["total"]
    gaps = {run: evaluate(questions, _run(tmp_path, *run).out)["total"] - fp32 for run in BUDGETS}
    assert {run: abs(gap) <= BUDGETS[run] for run, gap in gaps.items()} == dict.fromkeys(BUDGETS, True), gaps
