"""A compressed-tensors W4A16 checkpoint (int4 weights, groups of 32, bf16 activations) on vLLM's CPU kernel
(``cpu_gemm_wna16``, bf16 only) against transformers decompressing the same files (own venv, `-m vllm`).

The checkpoint is built with the compressed-tensors library itself (min-max scales, ``pack-quantized``): `vlmkit
quantize` writes this format too, and its exports go through the same checks once it lands.
"""

from __future__ import annotations

import numpy as np
import pytest

import vlmkit
from w4a16 import build_w4a16

pytestmark = pytest.mark.vllm

PROMPTS = ["Hello", "The cat sat on", "日本語で答えてください。"]
TEXT = "The quick brown fox jumps over the lazy dog. 日本語のテキストも少し。"

@pytest.fixture(scope="module")
def checkpoints(zoo, tmp_path_factory):
    source = zoo("llama")
    return source, build_w4a16("AutoModelForCausalLM", source, tmp_path_factory.mktemp("w4a16") / "llama-w4a16")


def _logits(runner, ids):
    import torch

    with torch.inference_mode():
        return runner.backend.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def test_w4a16_on_vllm_cpu_matches_transformers(checkpoints):
    source, quantized = checkpoints
    with vlmkit.load(quantized, backend="transformers") as hf:  # decompressed by compressed-tensors, bf16
        reference = [hf.generate(p, max_new_tokens=16) for p in PROMPTS]
        ids = hf.backend.tokenizer(TEXT).input_ids
        w4_logits = _logits(hf, ids)
    with vlmkit.load(source, backend="transformers", dtype="f32") as full:
        full_logits = _logits(full, ids)
    with vlmkit.load(quantized, backend="vllm") as runner:  # no --dtype: bf16 chosen for the CPU kernel
        assert runner.backend.llm.llm_engine.model_config.quantization == "compressed-tensors"
        ours = runner.generate_batch(PROMPTS, max_new_tokens=16)
        ours_logits = runner.backend.logits(ids)
    assert [r.token_ids for r in ours] == [r.token_ids for r in reference]
    engine_gap = np.abs(ours_logits - w4_logits).max()
    quantization_gap = np.abs(full_logits - w4_logits).max()
    # the two runtimes differ by bf16 rounding (ulp 0.25 at this logit scale), ten times less than what
    # 4-bit weights change: vLLM computes with the quantized weights, not something else
    assert engine_gap <= 0.25 and engine_gap * 10 < quantization_gap, (engine_gap, quantization_gap)
    assert (ours_logits.argmax(-1) == w4_logits.argmax(-1)).all()
