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


def _llama_perplexity(binary: Path, base: Path, cand: Path, text: Path, work: Path) -> dict[str, tuple[float, float]]:
    """llama-perplexity three times: the base's PPL (-f), its saved log-probs, then --kl-divergence; the
    summary numbers (value, printed uncertainty)."""
    from vlmkit.llamacpp.loading import extra_buffers_safe

    logits = work / "base.kld"
    common = ["-c", str(CTX), "-b", str(CTX), "-t", "2", "--no-warmup"] + ([] if extra_buffers_safe() else ["-nr"])
    outputs = []
    for args in (["-m", str(base), "-f", str(text)],
                 ["-m", str(base), "-f", str(text), "--kl-divergence-base", str(logits)],
                 ["-m", str(cand), "--kl-divergence-base", str(logits), "--kl-divergence"]):
        done = subprocess.run([str(binary), *args, *common], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout + done.stderr)

    def number(label: str, out: str) -> tuple[float, float]:
        match = re.search(re.escape(label) + r"\s*[:=]\s*(-?[\d.]+)\s*(?:±|\+/-)\s*([\d.]+)", out)
        assert match, f"{label!r} not in llama-perplexity's output:\n{out[-3000:]}"
        return float(match.group(1)), float(match.group(2))

    same = number("Same top p", outputs[2])
    return {"ppl_base": number("Final estimate: PPL", outputs[0]), "kld": number("Mean    KLD", outputs[2]),
            "ppl_q": number("Mean PPL(Q)", outputs[2]), "same_top": (same[0] / 100, same[1] / 100)}


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
    ours = compare(ggufs["f32"], ggufs["q4_0"], text, ctx=CTX).summary
    kld, kld_unc = theirs["kld"]
    assert kld > 2 * kld_unc > 0  # a measurable divergence, not noise around zero
    assert abs(ours.kld_mean - kld) <= kld_unc, (ours.kld_mean, theirs["kld"])
    assert ours.kld_mean == pytest.approx(kld, rel=1e-2)  # the same computation: far closer than the noise
    assert abs(ours.ppl_cand - theirs["ppl_q"][0]) <= theirs["ppl_q"][1]
    assert abs(ours.ppl_ref - theirs["ppl_base"][0]) <= theirs["ppl_base"][1]
    assert abs(ours.same_top - theirs["same_top"][0]) <= theirs["same_top"][1]
