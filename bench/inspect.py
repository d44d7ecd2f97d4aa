"""Bench: `vlmkit inspect` on a 70B-shaped sharded checkpoint vs transformers building it on meta.

The checkpoint is Llama-2-70B shaped (80 layers, hidden 8192, GQA 8 kv heads, vocab 32000, bf16) in
safetensors shards written as sparse files: real headers, holes for data, so it costs no disk.
Prints seconds and bytes read by vlmkit next to transformers' meta-device build from config.json,
and the ratio. Target: vlmkit under 1 s and under 1 MB read.

    python bench/inspect.py [--shards 29] [--keep DIR]
"""

from __future__ import annotations

import sys

# This file is named inspect.py: keep its folder off sys.path so `import inspect` finds the stdlib.
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("bench")]

import argparse  # noqa: E402
import json  # noqa: E402
import struct
import tempfile
import time
from pathlib import Path

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def llama_shapes(c: dict) -> dict[str, list[int]]:
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes |= {
            p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
            p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
            p + "mlp.down_proj.weight": [h, i],
            p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
        }
    return shapes


def write_sparse_checkpoint(folder: Path, shards: int) -> int:
    """Write sharded safetensors whose data regions are holes; returns the logical byte size."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    names = list(llama_shapes(CONFIG).items())
    per_shard = -(-len(names) // shards)
    weight_map, total = {}, 0
    for index in range(shards):
        chunk = names[index * per_shard:(index + 1) * per_shard]
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {}, 0
        for name, shape in chunk:
            size = 2 * int.__mul__(*shape) if len(shape) == 2 else 2 * shape[0]
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
            weight_map[name] = file_name
            offset += size
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / file_name, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + offset)
        total += offset
    index_json = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_json))
    return total


def read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def time_vlmkit(folder: Path) -> tuple[float, int, int]:
    from vlmkit.inspect import inspect_model

    warm = folder.parent / "warm"      # warm up imports on a one-tensor checkpoint first
    warm.mkdir(exist_ok=True)
    (warm / "config.json").write_text(json.dumps(CONFIG))
    blob = json.dumps({"lm_head.weight": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [0, 2]}}).encode()
    (warm / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0\0")
    inspect_model(warm, memory=True)
    before, start = read_bytes(), time.perf_counter()
    report = inspect_model(folder, memory=True)
    return time.perf_counter() - start, read_bytes() - before, report.params


def time_transformers_meta(folder: Path) -> tuple[float, int]:
    import torch
    import transformers

    start = time.perf_counter()
    config = transformers.AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    return time.perf_counter() - start, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=29)
    parser.add_argument("--keep", type=Path, help="write the checkpoint here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "llama-70b-shaped"
        logical = write_sparse_checkpoint(folder, args.shards)
        seconds, nbytes, params = time_vlmkit(folder)
        hf_seconds, hf_params = time_transformers_meta(folder)
    print(f"checkpoint: {params:,} parameters, {logical / 2**30:.1f} GiB logical, {args.shards} shards (sparse)")
    print(f"vlmkit inspect      : {seconds:.3f} s, {nbytes / 2**20:.3f} MiB read")
    print(f"transformers (meta) : {hf_seconds:.3f} s, {hf_params:,} parameters")
    print(f"ratio vlmkit / transformers time: {seconds / hf_seconds:.3f}")
    print(f"parameter counts equal: {params == hf_params}")
    ok = seconds < 1.0 and nbytes < 2**20 and params == hf_params
    print("target (< 1 s, < 1 MiB read, exact count):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
