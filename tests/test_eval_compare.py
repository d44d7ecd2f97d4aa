"""vlmkit eval compare through the backends vlmkit run uses, against the references: transformers vs its f32
GGUF on text and with images, and llama.cpp's own llama-perplexity --kl-divergence on a q4_0 GGUF."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from vlmkit.convert import convert
from vlmkit.eval.compare import compare

pytestmark = pytest.mark.llamacpp
CTX = 64


@pytest.fixture(scope="module")
def llama_ggufs(zoo, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-llama")
    hf = zoo("llama")
    out = {"hf": hf}
    out["f32"] = convert(hf, root / "f32", dtype="f32", verify=False).model_path
    return out


def test_text_transformers_vs_f32_gguf(llama_ggufs):
    result = compare(llama_ggufs["hf"], llama_ggufs["f32"], "corpus", ctx=CTX)
    s = result.summary
    assert s.n_tokens >= 1000
    assert s.kld_mean <= 1e-6, s.kld_mean
    assert s.same_top == 1.0
    assert abs(s.ln_ppl_ratio) < 1e-4
    assert result.notes  # the runtime approximations are named


def test_images_transformers_vs_f32_gguf(zoo, tmp_path):
    hf = zoo("llava-calm2-siglip")
    gguf_dir = convert(hf, tmp_path / "f32", dtype="f32", verify=False).model_path.parent
    result = compare(hf, gguf_dir, "demo", limit=24)
    assert result.summary.n_tokens >= 24
    assert result.summary.kld_mean <= 1e-4, result.summary.kld_mean
    embeddings = result.image_embeddings
    assert embeddings["images"] >= 4 and embeddings["cosine"] > 0.99999, embeddings
    assert embeddings["max_abs_diff"] < 1e-2 * embeddings["ref_max_abs"]


def test_demo_model_with_images_vs_its_f32_gguf(tmp_path):
    """The trained demo VLM (real, peaked distributions): answer tokens after image + question prompts."""
    gguf_dir = convert("demo", tmp_path / "f32", dtype="f32", verify=False).model_path.parent
    result = compare("demo", gguf_dir, "demo", limit=60)
    assert result.summary.kld_mean <= 1e-4, result.summary.kld_mean
    assert result.summary.same_top == 1.0


def test_image_answers_are_scored_on_the_rows_that_predict_them():
    """Each answer token's log-probability on an image set is transformers' own (processor + model, the
    answer appended): the rows scored are those that predict the answer, not the ones after it."""
    import numpy as np
    from hf_reference import answer_token_logprobs

    from vlmkit.eval.vqa import load_questions
    from vlmkit.hub import resolve_model

    questions = load_questions("demo", 4)
    result = compare("demo", "demo", "demo", limit=4)
    reference = answer_token_logprobs(resolve_model("demo"), [(q.image, q.question, q.answer) for q in questions])
    np.testing.assert_allclose(-result.stats.nll_ref, np.concatenate(reference), rtol=1e-4, atol=1e-5)


_PM = r"\s*±\s*"
CHUNK_ROW = re.compile(rf"^\s*(\d+)\s+([\d.]+){_PM}([\d.]+)\s+(-?[\d.]+){_PM}([\d.]+)\s+([\d.]+){_PM}([\d.]+)\s+"
                       rf"([\d.]+){_PM}([\d.]+) %\s+([\d.]+){_PM}([\d.]+) %", re.M)


def _llama_perplexity(binary: Path, base: Path, cand: Path, text: Path, work: Path) -> dict:
    """llama-perplexity: the base's running PPL (-f), its saved log-probs, then --kl-divergence.

    The numbers are read from the per-chunk rows (running totals after chunk k), not the final summary:
    llama.cpp's asynchronous logger can lose the last lines at exit (llama.cpp #22142), and on a busy
    machine it loses the summary every time. Returns the last complete row of each run and its chunk."""
    from vlmkit.llamacpp.loading import extra_buffers_safe

    logits = work / "base.kld"
    common = ["-c", str(CTX), "-b", str(CTX), "-t", "2", "--no-warmup"] + ([] if extra_buffers_safe() else ["-nr"])
    outputs = []
    for args in (["-m", str(base), "-f", str(text)],
                 ["-m", str(base), "-f", str(text), "--kl-divergence-base", str(logits)],
                 ["-m", str(cand), "--kl-divergence-base", str(logits), "--kl-divergence"]):
        done = subprocess.run([str(binary), *args, *common], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    ppl_rows = re.findall(r"\[(\d+)\]([\d.]+),", outputs[0])
    kld_rows = CHUNK_ROW.findall(outputs[2])
    assert ppl_rows and kld_rows, f"no per-chunk rows in llama-perplexity's output:\n{outputs[2][-3000:]}"
    row = [float(x) for x in kld_rows[-1]]
    return {"ppl_base_chunks": int(ppl_rows[-1][0]), "ppl_base": float(ppl_rows[-1][1]), "kld_chunks": int(row[0]),
            "ppl_q": row[1:3], "kld": row[5:7], "same_top": (row[9] / 100, row[10] / 100)}


def _first_chunks(stats, chunks: int):
    """The statistics of the first ``chunks`` chunks (each scores ctx - 1 - ctx/2 tokens)."""
    from vlmkit.metrics.kld import TokenStats, summarize

    n = chunks * (CTX - 1 - CTX // 2)
    return summarize(TokenStats(*(getattr(stats, f)[:n] for f in
                                  ("nll_ref", "nll_cand", "kld", "p_diff", "same_top", "position"))))


def test_q4_0_kld_agrees_with_llama_perplexity(tmp_path):
    """Same text, same GGUF pair: vlmkit's numbers within llama-perplexity's printed uncertainty.

    The base's PPL comes from llama-perplexity's plain perplexity run: in --kl-divergence mode it prints a
    PPL(base) from its stored uint16 log-probs, which clamp every target below e^-16 (most of them here)."""
    from vlmkit.eval.vqa import load_questions
    from vlmkit.zoo.llamacpp_source import llama_tool

    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"{q.question} {q.answer}" for q in load_questions("demo")), encoding="utf-8")
    ggufs = {dtype: convert("demo", tmp_path / dtype, dtype=dtype, verify=False).model_path for dtype in ("f32", "q4_0")}
    theirs = _llama_perplexity(llama_tool("llama-perplexity"), ggufs["f32"], ggufs["q4_0"], text, tmp_path)
    stats = compare(ggufs["f32"], ggufs["q4_0"], text, ctx=CTX).stats
    assert theirs["kld_chunks"] >= 20 and theirs["ppl_base_chunks"] >= 20
    ours = _first_chunks(stats, theirs["kld_chunks"])
    kld, kld_unc = theirs["kld"]
    assert kld > 2 * kld_unc > 0  # a measurable divergence, not noise around zero
    assert abs(ours.kld_mean - kld) <= kld_unc, (ours.kld_mean, theirs["kld"])
    assert ours.kld_mean == pytest.approx(kld, rel=1e-2)  # the same computation: far closer than the noise
    assert abs(ours.ppl_cand - theirs["ppl_q"][0]) <= theirs["ppl_q"][1]
    assert abs(ours.same_top - theirs["same_top"][0]) <= theirs["same_top"][1]
    assert _first_chunks(stats, theirs["ppl_base_chunks"]).ppl_ref == pytest.approx(theirs["ppl_base"], rel=1e-4)
