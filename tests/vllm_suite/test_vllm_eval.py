"""`vlmkit eval compare / perplexity / speed --backend vllm` from the command line, each against transformers in
the same run (own venv, `-m vllm`). No --dtype: vlmkit's `auto` is the checkpoint's float32 on both backends
(vLLM's own `auto` would be bfloat16), so the two agree to float32 rounding."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm

CTX = 64


def vlmkit_json(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "vlmkit", *args, "--json"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # stdout is the JSON alone: vLLM's prints are kept off it


@pytest.fixture(scope="module")
def llama(zoo):
    return zoo("llama")


def test_eval_compare_vllm_against_transformers_gives_kld_zero(llama):
    result = vlmkit_json("eval", "compare", str(llama), str(llama), "--cand-backend", "vllm", "--ctx", str(CTX))
    summary = result["summary"]
    assert summary["n_tokens"] > 500
    assert summary["kld_mean"] < 1e-9 and summary["kld_percentiles"]["Maximum"] < 1e-8, summary
    assert summary["same_top"] == 1.0 and abs(summary["ppl_ratio"] - 1) < 1e-5
    assert result["tokenizer"]["n_same"] == result["tokenizer"]["n_texts"]


def test_eval_perplexity_on_vllm_equals_transformers(llama):
    from vlmkit.eval.perplexity import perplexity

    reference = perplexity(llama, "corpus", ctx=CTX, backend="transformers")
    ours = vlmkit_json("eval", "perplexity", str(llama), "--ctx", str(CTX), "--backend", "vllm")
    assert (ours["n_tokens"], ours["n_chunks"]) == (reference.n_tokens, reference.n_chunks) and ours["n_tokens"] > 500
    assert ours["ppl"] == pytest.approx(reference.ppl, rel=1e-5)
    assert ours["ppl_unc"] == pytest.approx(reference.ppl_unc, rel=1e-4)


def test_eval_speed_on_vllm_times_the_prompt_transformers_builds(tmp_path):
    """The demo VLM with an image: the same prompt (image tokens expanded) and answer as on transformers; every
    rate positive; no separate image-encode time (vLLM runs the tower inside its engine)."""
    from vlmkit.demo.dataset import make_split
    from vlmkit.eval.speed import measure

    make_split("test", 1)[0].image.save(tmp_path / "scene.png")
    reference = measure("demo", tmp_path / "scene.png", runs=1, max_new_tokens=8, backend="transformers")
    ours = vlmkit_json("eval", "speed", "demo", "--image", str(tmp_path / "scene.png"), "--backend", "vllm",
                       "--runs", "2", "--max-new-tokens", "8")
    assert (ours["backend"], ours["runs"], ours["image_encode_ms"]) == ("vllm", 2, None)
    assert (ours["prompt_tokens"], ours["new_tokens"]) == (reference.prompt_tokens, reference.new_tokens)
    assert ours["time_to_first_token_ms"] > 0 and ours["prefill_tokens_per_s"] > 0 and ours["peak_rss_mb"] > 0
    assert (ours["decode_tokens_per_s"] is None) == (ours["new_tokens"] < 2)
    assert ours["decode_tokens_per_s"] is None or ours["decode_tokens_per_s"] > 0
