"""GGUF export mechanics: every tensor mapped or dropped with a reason, atomic output, streaming copies,
the pre-tokenizer match and the tensor rewrites (no llama.cpp needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from vlmkit.convert import convert
from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.gguf.tokenizer import GPT2_RE, LLAMA3_RE, QWEN2_RE, match_pre_tokenizer
from vlmkit.gguf.transforms import neox_qkv_regroup, rope_permute_q


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


def test_unmapped_tensor_stops_with_its_name_and_leaves_nothing(zoo, tmp_path):
    model = _copy(zoo("llama"), tmp_path / "model")
    tensors = load_file(model / "model.safetensors")
    tensors["model.layers.0.self_attn.mystery_gate.weight"] = np.zeros((4, 4), np.float32)
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(VlmkitError, match=r"1 tensor\(s\) have no GGUF mapping.*mystery_gate"):
        convert(model, tmp_path / "out", dtype="f16", verify=False)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_failure_during_write_leaves_no_output(zoo, tmp_path, monkeypatch):
    import vlmkit.llamacpp.quantize as quantize_module

    def broken(*args, **kwargs):
        raise VlmkitError(None, "quantizer exploded")

    monkeypatch.setattr(quantize_module, "quantize", broken)
    with pytest.raises(VlmkitError, match="quantizer exploded"):
        convert(zoo("llama"), tmp_path / "out", dtype="q4_k_m", verify=False)
    assert list(tmp_path.iterdir()) == []


def test_every_dropped_tensor_has_a_reason(zoo, tmp_path):
    result = convert(zoo("llava-clip"), tmp_path / "out", dtype="f16", verify=False, mmproj=False)
    names = set(load_file(zoo("llava-clip") / "model.safetensors"))
    written = {t.name for t in gguf.GGUFReader(result.model_path).tensors}
    assert len(written) + len(result.dropped) == len(names) == result.n_tensors + len(result.dropped)
    assert all(name.startswith(("vision_tower.", "multi_modal_projector.")) for name in result.dropped)


def test_f16_source_is_copied_byte_for_byte(zoo, tmp_path):
    """Untransformed tensors are streamed file-to-file; Q/K rows are permuted for llama.cpp's RoPE."""
    model = _copy(zoo("llama"), tmp_path / "model")
    tensors = {k: v.astype(np.float16) for k, v in load_file(model / "model.safetensors").items()}
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    result = convert(model, tmp_path / "out", dtype="f16", verify=False)
    out = {t.name: t for t in gguf.GGUFReader(result.model_path).tensors}
    down = out["blk.0.ffn_down.weight"]
    assert down.tensor_type.name == "F16"
    assert np.array_equal(np.asarray(down.data).reshape(-1), tensors["model.layers.0.mlp.down_proj.weight"].reshape(-1))
    q = np.asarray(out["blk.1.attn_q.weight"].data).reshape(tensors["model.layers.1.self_attn.q_proj.weight"].shape)
    hp = {"n_head": _n_head(model)}
    assert np.array_equal(q, rope_permute_q(tensors["model.layers.1.self_attn.q_proj.weight"], hp))
    assert out["blk.0.attn_norm.weight"].tensor_type.name == "F32"   # norms stay f32, as llama.cpp wants


def _n_head(model: Path) -> int:
    import json

    return json.loads((model / "config.json").read_text())["num_attention_heads"]


def test_transformers5_gpt_neox_config_without_rotary_pct(zoo, tmp_path):
    """llama.cpp's converter stops with KeyError 'rotary_pct'; here rope dims come from rope_parameters."""
    import json

    config = json.loads((zoo("opencalm") / "config.json").read_text())
    assert "rotary_pct" not in config
    result = convert(zoo("opencalm"), tmp_path / "out", dtype="f32", verify=False)
    reader = gguf.GGUFReader(result.model_path)
    field = reader.fields["gptneox.rope.dimension_count"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert int(field.parts[field.data[0]][0]) == int(config["rope_parameters"]["partial_rotary_factor"] * head_dim)


def test_neox_qkv_regroup_matches_transformers_split():
    """transformers views the fused output per head as [q k v]; llama.cpp wants [all q | all k | all v]."""
    import torch

    n_head, head_dim, n_embd = 4, 8, 32
    weight = np.random.default_rng(0).standard_normal((3 * n_head * head_dim, n_embd)).astype(np.float32)
    x = torch.randn(5, n_embd)
    qkv = (x @ torch.from_numpy(weight).T).view(5, n_head, 3 * head_dim)
    q, k, v = qkv.chunk(3, dim=-1)
    regrouped = torch.from_numpy(neox_qkv_regroup(weight, {"n_head": n_head}))
    out = x @ regrouped.T
    for i, part in enumerate((q, k, v)):
        torch.testing.assert_close(out[:, i * n_head * head_dim:(i + 1) * n_head * head_dim], part.reshape(5, -1))


@pytest.mark.parametrize(("pre_tokenizer", "expected"), [
    ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_RE}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_RE}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}, "qwen2"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT2_RE}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}, "gpt-2"),
])
def test_pre_tokenizer_matched_by_regex(pre_tokenizer, expected):
    assert match_pre_tokenizer({"pre_tokenizer": pre_tokenizer})[0] == expected


@pytest.mark.parametrize("pre_tokenizer", [
    {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True},
    {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{L}+|\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
])
def test_unknown_pre_tokenizer_is_refused(pre_tokenizer):
    with pytest.raises(UnsupportedError, match="pre-tokenizer"):
        match_pre_tokenizer({"pre_tokenizer": pre_tokenizer})


def test_unigram_sentencepiece_is_refused_not_silently_wrong(zoo, tmp_path):
    import io
    import json

    import sentencepiece as spm

    from vlmkit.gguf.corpus import TOKENIZER_CORPUS

    model = _copy(zoo("llama"), tmp_path / "model")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TOKENIZER_CORPUS * 10), model_writer=buffer,
                                   model_type="unigram", vocab_size=json.loads((model / "config.json").read_text())[
                                       "vocab_size"], hard_vocab_limit=False, num_threads=1, minloglevel=2)
    (model / "tokenizer.model").write_bytes(buffer.getvalue())
    with pytest.raises(UnsupportedError, match="unigram"):
        convert(model, tmp_path / "out", dtype="f16", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("gtype", [gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32,
                                   gguf.GGMLQuantizationType.BF16])
def test_blockwise_cast_writes_the_bytes_of_the_whole_cast(tmp_path, gtype):
    """``write_cast`` bounds the float32 intermediate of a transformed tensor (the f16 conversion's peak RSS)
    and writes exactly what casting the whole array writes, rows split at any block size."""
    import ml_dtypes

    from vlmkit.gguf.lm import cast, write_cast

    array = (np.random.default_rng(0).standard_normal((37, 24)) * 3).astype(ml_dtypes.bfloat16)
    whole = cast(array, gtype).tobytes()
    for max_bytes in (1, 48 * 2 + 1, 10**6):
        with open(tmp_path / "out.bin", "wb") as out:
            write_cast(array, gtype, out, max_bytes)
        assert (tmp_path / "out.bin").read_bytes() == whole
    with open(tmp_path / "vector.bin", "wb") as out:
        write_cast(array[0], gtype, out, 4)
    assert (tmp_path / "vector.bin").read_bytes() == cast(array[0], gtype).tobytes()
