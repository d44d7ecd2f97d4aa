"""`vlmkit quantize --format gguf|both`: Q4_0 / Q8_0 at group 32 carry the method's integers and scales
exactly (read back with gguf-py, run in llama.cpp); other types go through llama.cpp's quantizer from the
AWQ-folded float weights with the calibration run's importance matrix (the same tensors as llama-quantize
--imatrix on vlmkit's imatrix.gguf), and the result runs through ``vlmkit.load`` / `vlmkit run` on the
llama.cpp backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest
from compressed_tensors.compressors import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationScheme
from PIL import Image
from safetensors.torch import load_file

import vlmkit
from vlmkit.convert import convert
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
    assert any("llama.cpp's quantizer" in note and "AWQ's scales folded in" in note for note in result.notes)
    assert not (out / "model.safetensors").exists() and (out / "model.gguf").is_file()
    assert (out / "imatrix.gguf").is_file()
    types = {t.tensor_type.name for t in gguf.GGUFReader(out / "model.gguf").tensors}
    assert "Q4_K" in types
    with vlmkit.load(out, device="cpu", threads=2) as runner:
        assert len(runner.generate("Hello", max_new_tokens=4).token_ids) > 0


# --- K-quants with the calibration run's importance matrix, on the demo VLM (widths 256 / 512: real Q4_K) ---

@pytest.fixture(scope="module")
def demo_awq(tmp_path_factory):
    """AWQ W4 on 16 demo image questions, exported as f32 (the folded float model + imatrix.gguf) and as
    q4_k_m (llama.cpp's quantizer handed the importance matrix in memory); the plain f32 conversion beside."""
    tmp = tmp_path_factory.mktemp("demo-awq")
    for gguf_type in ("f32", "q4_k_m"):
        quantize("demo", tmp / gguf_type, method="awq", bits=4, group_size=128, calib="demo", samples=16,
                 held_out=4, format="gguf", gguf_type=gguf_type, progress=False)
    convert("demo", tmp / "source", dtype="f32", verify=False)
    return tmp


def _tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, bytes(t.data)) for t in gguf.GGUFReader(path).tensors}


def test_awq_folded_float_gguf_computes_what_the_source_computes(demo_awq) -> None:
    """Folding moves AWQ's scales between modules without changing the function: in llama.cpp, on held-out
    image questions, the folded f32 model matches the source's f32 conversion (while its weights differ)."""
    from vlmkit.eval.compare import compare

    folded, source = _tensors(demo_awq / "f32" / "model.gguf"), _tensors(demo_awq / "source" / "model.gguf")
    assert folded["blk.0.attn_norm.weight"] != source["blk.0.attn_norm.weight"]
    assert folded["blk.0.attn_q.weight"] != source["blk.0.attn_q.weight"]
    summary = compare(demo_awq / "source", demo_awq / "f32", "demo", limit=8, threads=2).summary
    # fp32 reassociation only: 9.9e-6 nats (Δp RMS 1.4e-8) on the stage-3 demo weights, whose held-out logits reach
    # |20|+; a fold that changed the function shows as W8-sized KLD (1e-3 and up)
    assert summary.kld_mean < 1e-4 and summary.rms_dp < 1e-6 and summary.same_top == 1.0


def test_q4_k_m_is_what_llama_quantize_makes_from_the_imatrix_file(demo_awq, tmp_path: Path) -> None:
    """llama.cpp's own program, given vlmkit's imatrix.gguf and folded f32 GGUF, writes byte-identical tensors
    to vlmkit's in-memory path; without the matrix every weight the matrix covers comes out different."""
    from vlmkit.zoo.llamacpp_source import llama_tool

    tool = llama_tool("llama-quantize")
    f32, ours = demo_awq / "f32", demo_awq / "q4_k_m"
    assert (f32 / "imatrix.gguf").read_bytes() == (ours / "imatrix.gguf").read_bytes()  # one calibration run
    for name, extra in (("with", ["--imatrix", str(f32 / "imatrix.gguf")]), ("without", [])):
        done = subprocess.run([str(tool), *extra, str(f32 / "model.gguf"), str(tmp_path / f"{name}.gguf"), "q4_k_m",
                               "2"], capture_output=True)
        assert done.returncode == 0, done.stderr[-2000:].decode(errors="replace")
    mine, theirs, plain = (_tensors(p) for p in (ours / "model.gguf", tmp_path / "with.gguf",
                                                  tmp_path / "without.gguf"))
    assert mine == theirs
    weighted = [name for name in mine if name.startswith("blk.") and not name.endswith("norm.weight")]
    assert len(weighted) == 21 and all(plain[name] != mine[name] for name in weighted)  # 3 blocks × 7 Linears
    assert sum(kind == "Q4_K" for kind, _ in mine.values()) >= 18
    fields = {f.name: f.contents() for f in gguf.GGUFReader(ours / "model.gguf").fields.values()}
    assert fields["quantize.imatrix.entries_count"] == 21 and fields["quantize.imatrix.dataset"] == "demo"
