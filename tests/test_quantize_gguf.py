"""`vlmkit quantize --format gguf|both`: Q4_0 / Q8_0 at group 32 carry the method's integers and scales
exactly (read back with gguf-py, run in llama.cpp), other types go through llama.cpp's quantizer, and the
result runs through ``vlmkit.load`` / `vlmkit run` on the llama.cpp backend."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from compressed_tensors.compressors import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationScheme
from PIL import Image
from safetensors.torch import load_file

import vlmkit
from vlmkit.export.gguf_quant import weight_args
from vlmkit.gguf.transforms import rope_permute_q
from vlmkit.metrics.logits import logit_stats
from vlmkit.quant.pipeline import quantize

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def exact(zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "q4_0"
    result = quantize(zoo("llava-calm2-siglip"), out, method="gptq", bits=4, group_size=32, calib="demo",
                      samples=6, held_out=3, format="both", gguf_type="q4_0", progress=False, keep_logits=True)
    return out, result


def test_q4_0_tensors_hold_the_methods_values(exact) -> None:
    """gguf-py's ggml dequantizer on the GGUF tensor == compressed-tensors' decompressor on the HF export."""
    out, result = exact
    assert any("written as ggml blocks, exactly" in note for note in result.notes)
    hf = load_file(out / "model.safetensors")
    reader = gguf.GGUFReader(out / "gguf" / "model.gguf")
    tensors = {t.name: t for t in reader.tensors}
    n_head = 4
    for gguf_name, source, permute in (("blk.0.ffn_down.weight", "mlp.down_proj", False),
                                       ("blk.1.attn_q.weight", "self_attn.q_proj", True)):
        layer = gguf_name.split(".")[1]
        base = f"language_model.model.layers.{layer}.{source}"
        packed = {k.removeprefix(base + "."): v for k, v in hf.items() if k.startswith(base + ".weight_")}
        scheme = QuantizationScheme(targets=["Linear"], weights=weight_args(packed))
        ours = PackedQuantizationCompressor.decompress(packed, scheme)["weight"].numpy()
        if permute:
            ours = rope_permute_q(ours, {"n_head": n_head})
        tensor = tensors[gguf_name]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q4_0
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(ours.shape)
        np.testing.assert_array_equal(values, ours)


def test_q4_0_runs_in_llama_cpp_with_vlmkits_logits(exact) -> None:
    out, result = exact
    with vlmkit.load(out / "gguf", device="cpu", threads=2) as runner:
        for inputs, ours in result.logits["held-out plain text"]:
            theirs = np.asarray(runner.backend.logits(inputs["input_ids"][0].tolist()), dtype=np.float32)
            stats = logit_stats(ours.numpy(), theirs)
            assert stats.same_top1 == 1.0 and stats.mean_kld < 1e-5  # ggml's q8 activations: the only difference


def test_quantized_gguf_answers_through_vlmkit_load(exact) -> None:
    out, _ = exact
    image = Image.new("RGB", (64, 64), (220, 30, 30))
    with vlmkit.load(out / "gguf", device="cpu", threads=2) as gguf_runner, \
            vlmkit.load(out, dtype="f32", device="cpu") as hf_runner:
        assert gguf_runner.name == "llamacpp"
        ours = gguf_runner.generate("What color is the square?", images=[image], max_new_tokens=8)
        ref = hf_runner.generate("What color is the square?", images=[image], max_new_tokens=8)
        assert ours.prompt_tokens == ref.prompt_tokens and len(ours.token_ids) > 0
        text_ours = gguf_runner.generate("Tell me a story about a red square.", max_new_tokens=12)
        text_ref = hf_runner.generate("Tell me a story about a red square.", max_new_tokens=12)
        assert text_ours.token_ids == text_ref.token_ids


def test_other_gguf_types_go_through_llama_cpp_quantizer(zoo, tmp_path: Path) -> None:
    out = tmp_path / "k"
    result = quantize(zoo("llama"), out, method="awq", bits=4, group_size=128, calib="demo", samples=4,
                      held_out=2, format="gguf", gguf_type="q4_k_m", progress=False)
    assert any("llama.cpp's quantizer" in note for note in result.notes)
    assert not (out / "model.safetensors").exists() and (out / "model.gguf").is_file()
    types = {t.tensor_type.name for t in gguf.GGUFReader(out / "model.gguf").tensors}
    assert "Q4_K" in types
    with vlmkit.load(out, device="cpu", threads=2) as runner:
        assert len(runner.generate("Hello", max_new_tokens=4).token_ids) > 0
