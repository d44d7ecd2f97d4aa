"""A compressed-tensors W4A16 checkpoint (int4 weights, groups of 32, bf16 activations) on vLLM's CPU kernel
(``cpu_gemm_wna16``, bf16 only) against transformers decompressing the same files (own venv, `-m vllm`).

The checkpoint is built with the compressed-tensors library itself (min-max scales, ``pack-quantized``): `vlmkit
quantize` writes this format too, and its exports go through the same checks once it lands.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import vlmkit

pytestmark = pytest.mark.vllm

PROMPTS = ["Hello", "The cat sat on", "日本語で答えてください。"]
TEXT = "The quick brown fox jumps over the lazy dog. 日本語のテキストも少し。"
GROUP = 32


def build_w4a16(source, out):
    """RTN W4A16 of every Linear but the head, through compressed-tensors' own quantization and compressor."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus, apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=GROUP)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"],
                                                        format="pack-quantized"))
    for module in model.modules():
        if hasattr(module, "weight_scale"):
            groups = module.weight.data.float().reshape(module.weight.shape[0], -1, GROUP)
            scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
            module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
            module.weight_zero_point.data.copy_(zero.reshape(module.weight_zero_point.shape))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    for item in source.iterdir():  # tokenizer, processor, chat template, generation config
        if item.is_file() and item.name not in ("config.json", "model.safetensors"):
            shutil.copy2(item, out / item.name)
    return out


@pytest.fixture(scope="module")
def checkpoints(zoo, tmp_path_factory):
    source = zoo("llama")
    return source, build_w4a16(source, tmp_path_factory.mktemp("w4a16") / "llama-w4a16")


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
