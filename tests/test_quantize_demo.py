"""The demo VLM quantized on image+text calibration (the demo generator's training split, 64 questions): GPTQ and
AWQ W4 (group 128: the demo LM's widths 256 and 512 divide it, no fallback) lose less than RTN W4 on the whole
test split (600 image questions) held out; the slow test scores each on the test split at 6,000 questions against
the issue's budgets.

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


def test_gptq_decides_the_answer_position_closer_than_rtn(w4) -> None:
    """The last prompt position (where a yes / no is decided): GPTQ W4's KLD there is several times below RTN W4's
    (0.0002 against 0.0014 on the stage-3 weights); AWQ's is not (0.0024-0.0027), which is why the report shows
    the column beside the all-position mean."""
    gptq, rtn = w4["gptq"].quality[HELD_OUT], w4["rtn"].quality[HELD_OUT]
    assert gptq["last_position_mean_kld"] < 0.5 * rtn["last_position_mean_kld"]
    assert 0 < rtn["last_position_mean_kld"] and rtn["last_position_same_top1"] < 1


@pytest.fixture(scope="module")
def large_test_split():
    """The demo's test split at 2,000 images (6,000 questions, the 600 of ``demo`` first): on 600 questions one
    lost yes/no pair costs 3 points, more than the 2-point budget, and which near-tied question flips is chance
    (fp32's smallest answer margin there is 0.09 nats); on 6,000 one answer is ~0.3 points."""
    from vlmkit.eval.vqa import evaluate, load_questions

    questions = load_questions("demo-large")
    return questions, evaluate(questions, "demo")["total"]


@pytest.mark.slow
@pytest.mark.parametrize("method,bits,samples,budget", [("rtn", 8, 64, 0.5), ("gptq", 4, 64, 2.0), ("gptq", 4, 128, 2.0),
                                                        ("awq", 4, 64, 2.0), ("awq", 4, 128, 2.0)])
def test_demo_mme_total_within_the_issues_budget(large_test_split, tmp_path: Path, method: str, bits: int,
                                                 samples: int, budget: float) -> None:
    """The issue's budgets on the MME-style total of the 6,000 large-test-split questions: W8 within 0.5 points of
    fp32, W4 GPTQ / AWQ within 2, at 64 and 128 calibration questions (about 1.5 minutes each on 2 cores)."""
    from vlmkit.eval.vqa import evaluate

    questions, fp32 = large_test_split
    total = evaluate(questions, _run(tmp_path, method, bits, samples, held_out=1).out)["total"]
    assert abs(total - fp32) <= budget, (total, fp32)
