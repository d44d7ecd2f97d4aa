"""llama.cpp's importance-matrix files (no model needed): vlmkit writes the GGUF form llama-imatrix writes and
reads both forms with llama-quantize's normalisation; AWQ folds replay exactly on a fresh block."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmkit.errors import CheckpointError
from vlmkit.quant.imatrix import Importance, read_imatrix, write_imatrix


def test_gguf_imatrix_round_trip_gives_mean_square_per_column(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(37, 8)).astype(np.float32)
    entries = {"blk.0.attn_q.weight": Importance((x ** 2).sum(0), 37),
               "blk.0.ffn_up.weight": Importance(np.zeros(8, np.float32), 0)}
    write_imatrix(tmp_path / "m.gguf", entries, "demo", chunk_count=5, chunk_size=7)
    read = read_imatrix(tmp_path / "m.gguf")
    np.testing.assert_allclose(read.values["blk.0.attn_q.weight"], (x ** 2).mean(0), rtol=1e-6)
    np.testing.assert_array_equal(read.values["blk.0.ffn_up.weight"], np.ones(8))  # no tokens: llama.cpp's 1
    assert read.datasets == ["demo"] and read.chunk_count == 5
    assert read.metadata(Path("m.gguf")) == {"quantize.imatrix.file": "m.gguf", "quantize.imatrix.dataset": "demo",
                                              "quantize.imatrix.entries_count": 2, "quantize.imatrix.chunks_count": 5}


def test_legacy_dat_is_divided_by_its_call_count(tmp_path: Path) -> None:
    """The layout of llama-imatrix's old .dat output (common/imatrix-loader.cpp's legacy reader)."""
    values = np.array([2.0, 4.0, 6.0], np.float32)
    name = b"blk.3.ffn_down.weight"
    data = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", 2, 3) + values.tobytes()
    data += struct.pack("<ii", 9, 4) + b"wiki"
    (tmp_path / "old.dat").write_bytes(data)
    read = read_imatrix(tmp_path / "old.dat")
    np.testing.assert_array_equal(read.values["blk.3.ffn_down.weight"], values / 2)
    assert read.chunk_count == 9 and read.datasets == ["wiki"]


@pytest.mark.parametrize("content", [b"", b"\x01\x00\x00\x00\xff", b"GGUF\x03\x00\x00\x00garbage"])
def test_malformed_imatrix_is_one_line_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.imatrix"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a llama.cpp importance matrix") as error:
        read_imatrix(path)
    assert "bad.imatrix" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("clip,rounder", [(False, "_quantize"), (True, "clip_search")])
def test_recorded_awq_folds_replay_the_float_weights_exactly(clip: bool, rounder: str) -> None:
    """What llama.cpp's quantizer starts from (FoldedWeights) is bit-for-bit the weight AWQ rounded."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from vlmkit.quant.blocks import apply_folds, quantize_block
    from vlmkit.quant.capture import BlockInput
    from vlmkit.quant.recipe import QuantSpec

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                         num_hidden_layers=1)
    block = LlamaDecoderLayer(config, 0).eval()
    fresh = {k: v.clone() for k, v in block.state_dict().items()}
    hidden = torch.randn(1, 12, 64)
    position_ids = torch.arange(12)[None]
    items = [BlockInput(hidden, (), {"position_embeddings": LlamaRotaryEmbedding(config)(hidden, position_ids),
                                      "position_ids": position_ids})]
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    seen: dict[str, torch.Tensor] = {}
    spec = QuantSpec("awq", 4, 32, True, False, awq_clip=clip)
    import vlmkit.quant.blocks as blocks

    original = getattr(blocks, rounder)  # receives each (scaled) float weight AWQ rounds

    def spy(w, *args, **kwargs):
        seen[f"{len(seen)}"] = w.clone()
        return original(w, *args, **kwargs)

    setattr(blocks, rounder, spy)
    try:
        done = quantize_block(block, names, {n: 32 for n in names}, spec, items, None)
    finally:
        setattr(blocks, rounder, original)
    assert done.folds, "AWQ found no module to fold into"
    replay = LlamaDecoderLayer(config, 0).eval()
    replay.load_state_dict(fresh)
    apply_folds(replay, done.folds)
    modules = dict(replay.named_modules())
    for i, result in enumerate(done.linears):
        assert torch.equal(modules[result.name].weight, seen[str(i)]), result.name
    norm = dict(block.named_modules())["input_layernorm"].weight
    assert torch.equal(modules["input_layernorm"].weight, norm) and not torch.equal(norm, fresh["input_layernorm.weight"])


def test_convert_refuses_an_imatrix_for_a_float_type_or_another_model(zoo, tmp_path: Path) -> None:
    from vlmkit.convert import convert
    from vlmkit.errors import VlmkitError

    path = tmp_path / "other.gguf"
    write_imatrix(path, {"blk.0.not_in_this_model.weight": Importance(np.ones(8, np.float32), 4)}, "x", 1, 4)
    with pytest.raises(VlmkitError, match="is a float type"):
        convert(zoo("llama"), tmp_path / "f16", dtype="f16", verify=False, imatrix=path)
    with pytest.raises(VlmkitError, match="none of its 1 entries names a tensor of this model"):
        convert(zoo("llama"), tmp_path / "q", dtype="q4_k_m", verify=False, imatrix=path)
    assert not (tmp_path / "f16").exists() and not (tmp_path / "q").exists()
