"""`vlmkit quantize --asym`: the compressed-tensors export holds exactly vlmkit's zero-point grid, in the layout
compressed-tensors' compressor and vLLM use (the zero point packed along the rows), and stock transformers loads
it through its `dequantize` path (the compressed path cannot: llm-compressor #1618 / #1704) with vlmkit's
logits; the GGUF side, whose Q4_0 blocks have no zero point, is llama.cpp's own rounding of the float weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gguf
import pytest
import torch
from compressed_tensors.compressors import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationScheme
from rich.console import Console
from safetensors.torch import load_file
from test_quantize_zoo import reload_logits_match

import vlmkit
from vlmkit.cli.quantize_view import render
from vlmkit.convert import convert
from vlmkit.quant.pipeline import quantize
from vlmkit.quant.rtn import rtn
from vlmkit.readers import open_checkpoint


def _quantize(source: Path, out: Path, **options):
    return quantize(source, out, method="rtn", bits=4, group_size=32, symmetric=False, calib="demo", samples=4,
                    held_out=2, progress=False, **options)


@pytest.fixture(scope="module")
def asym(zoo, tmp_path_factory):
    """RTN W4 asymmetric in groups of 32 on the SigLIP LLaVA replica, as compressed-tensors."""
    source = zoo("llava-calm2-siglip")
    out = tmp_path_factory.mktemp("asym") / "q"
    return source, out, _quantize(source, out, keep_logits=True)


def test_the_run_says_how_each_export_loads(asym) -> None:
    _, out, result = asym
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["dequantize"] is True and config["config_groups"]["group_0"]["weights"]["symmetric"] is False
    said = [note for note in result.notes if note.startswith("asymmetric export")]
    assert len(said) == 1 and "dequantize: true" in said[0] and "#1618" in said[0]
    console = Console(record=True, width=400, file=io.StringIO())
    render(result, console)
    printed = console.export_text()
    assert all(f"note: {note}" in printed for note in said)
    assert all(note in json.loads((out / "vlmkit_quantization.json").read_text())["notes"] for note in said)


def test_exported_tensors_decompress_to_vlmkits_grid(asym) -> None:
    """compressed-tensors' own decompressor on every exported Linear gives exactly the weights RTN rounds the
    source to (asymmetric min/max grid), from a zero point packed [rows / 8, groups] as its compressor writes it."""
    source, out, result = asym
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = QuantizationScheme.model_validate(config["config_groups"]["group_0"])
    exported = load_file(out / "model.safetensors")
    checkpoint = open_checkpoint(source)
    bases = sorted(name.removesuffix(".weight_packed") for name in exported if name.endswith(".weight_packed"))
    assert len(bases) == len(result.quantized) == 14
    for base in bases:
        packed = {key.removeprefix(base + "."): t for key, t in exported.items() if key.startswith(base + ".weight_")}
        weight = checkpoint.load(base + ".weight").float()
        rows, cols = weight.shape
        assert packed["weight_zero_point"].dtype == torch.int32
        assert tuple(packed["weight_zero_point"].shape) == (rows // 8, cols // 32)
        ours = rtn(weight, scheme.weights).weight
        theirs = PackedQuantizationCompressor.decompress(packed, scheme)["weight"].float()
        torch.testing.assert_close(theirs, ours, rtol=0, atol=0)
        assert packed["weight_zero_point"].unique().numel() > 1  # a real zero point per group, not the symmetric 0
    checkpoint.close()


def test_stock_from_pretrained_loads_it_with_vlmkits_logits(asym) -> None:
    _, out, result = asym
    reload_logits_match(out, result)


@pytest.mark.llamacpp
def test_q4_0_is_llama_cpps_rounding_of_the_source(zoo, tmp_path: Path) -> None:
    """No zero point in ggml's Q4_0 (said in a note): the GGUF holds what `vlmkit convert --dtype q4_0 --imatrix`
    makes from the source with the run's importance matrix, tensor for tensor, and it answers in llama.cpp."""
    source, out = zoo("llava-calm2-siglip"), tmp_path / "q"
    result = _quantize(source, out, format="gguf", gguf_type="q4_0")
    assert not any(note.startswith("asymmetric export") for note in result.notes)  # no compressed-tensors export
    assert any(note.startswith("GGUF q4_0: ggml's blocks are symmetric (no zero point)") for note in result.notes)
    convert(source, tmp_path / "ref", dtype="q4_0", imatrix=out / "imatrix.gguf", verify=False)
    for name in ("model.gguf", "mmproj.gguf"):
        ours, ref = (gguf.GGUFReader(folder / name).tensors for folder in (out, tmp_path / "ref"))
        assert [(t.name, t.tensor_type, bytes(t.data)) for t in ours] == \
               [(t.name, t.tensor_type, bytes(t.data)) for t in ref]
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(out / "model.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q4_0
    with vlmkit.load(out, device="cpu", threads=2) as runner:
        assert len(runner.generate("Hello", max_new_tokens=4).token_ids) > 0
