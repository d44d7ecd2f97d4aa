"""Benchmark: `vlmkit convert --dtype f16` vs llama.cpp's convert_hf_to_gguf.py vs `cp`, on a ~1.1 B-parameter
sharded fp16 Llama (TinyLlama-1.1B's shape) that this script builds with random weights.

    python bench/convert.py [--workdir /tmp/vlmkit-bench] [--llama-cpp-src DIR]

The checkpoint is written shard by shard with safetensors (never a whole model in memory, no transformers);
its tokenizer is a small sentencepiece model (the config's vocab_size is padded, which both converters
accept). Each tool runs as a child of a fresh Python wrapper whose RUSAGE_CHILDREN ru_maxrss is that
tool's peak RSS; the source is read once beforehand so every tool starts from the same page cache.
Issue 4's targets: at most 1.5x the cp time and at most 300 MB peak RSS.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds inspect.py (the inspect benchmark): drop this folder from sys.path before anything imports
# the standard library's inspect
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
SHARD_BYTES = 500 << 20


def layer_shapes(i: int) -> dict[str, tuple[int, ...]]:
    h, f = SHAPE["hidden_size"], SHAPE["intermediate_size"]
    kv = h // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    p = f"model.layers.{i}."
    return {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h), p + "mlp.down_proj.weight": (h, f),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)}


def all_shapes() -> dict[str, tuple[int, ...]]:
    h, v = SHAPE["hidden_size"], SHAPE["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h)}
    for i in range(SHAPE["num_hidden_layers"]):
        shapes.update(layer_shapes(i))
    shapes.update({"model.norm.weight": (h,), "lm_head.weight": (v, h)})
    return shapes


def build(model_dir: Path) -> Path:
    """Write the sharded checkpoint (skipped when it is already there)."""
    if (model_dir / "config.json").exists():
        return model_dir
    from safetensors.numpy import save_file

    tmp = model_dir.with_name(model_dir.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shard, size, weight_map, shards = {}, 0, {}, []
    items = list(all_shapes().items())
    for n, (name, shape) in enumerate(items):
        shard[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)
        size += shard[name].nbytes
        if size >= SHARD_BYTES or n == len(items) - 1:
            shards.append(shard)
            file = f"model-{len(shards):05d}.safetensors"
            save_file(shard, tmp / file, metadata={"format": "pt"})
            weight_map.update({k: file for k in shard})
            shard, size = {}, 0
    total = sum(int(np.prod(s)) * 2 for s in all_shapes().values())
    (tmp / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16",
              "bos_token_id": 1, "eos_token_id": 2, **SHAPE}
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(tmp)
    os.replace(tmp, model_dir)
    return model_dir


def _write_tokenizer(model_dir: Path) -> None:
    import io

    import sentencepiece as spm

    from vlmkit.gguf.corpus import TOKENIZER_CORPUS

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TOKENIZER_CORPUS * 20), model_writer=buffer,
                                   model_type="bpe", vocab_size=600, byte_fallback=True, character_coverage=1.0,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2,
                                   normalization_rule_name="identity", remove_extra_whitespaces=False)
    (model_dir / "tokenizer.model").write_bytes(buffer.getvalue())
    (model_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "add_bos_token": True, "add_eos_token": False}))


_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:]).returncode; dt = time.perf_counter() - t; "
            "print(rc, dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of ``cmd`` run as the only child of a fresh wrapper process."""
    subprocess.run(["sync"], check=True)
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], env=env, capture_output=True, text=True)
    rc, seconds, rss_kb = out.stdout.strip().splitlines()[-1].split()
    if rc != "0":
        raise RuntimeError(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return float(seconds), int(rss_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vlmkit-bench"))
    parser.add_argument("--llama-cpp-src", type=Path, help="llama.cpp tree (default: from the llama-cpp-python sdist)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the median time is reported")
    args = parser.parse_args()
    if args.llama_cpp_src is None:
        from vlmkit.zoo.llamacpp_source import llama_cpp_source

        args.llama_cpp_src = llama_cpp_source()
    model = build(args.workdir / "llama-1b-f16")
    size = sum(f.stat().st_size for f in model.iterdir())
    subprocess.run(f"cat {model}/*.safetensors > /dev/null", shell=True, check=True)  # same page cache for all
    outs = {k: args.workdir / k for k in ("vlmkit", "llamacpp", "cp")}
    for path in outs.values():
        shutil.rmtree(path, ignore_errors=True)
    vlmkit = [sys.executable, "-c", "from vlmkit.cli import main; main()", "convert", str(model),
              "--to", "gguf", "--out", str(outs["vlmkit"]), "--dtype", "f16", "--no-verify"]
    llamacpp = [sys.executable, str(args.llama_cpp_src / "convert_hf_to_gguf.py"), str(model),
                "--outfile", str(outs["llamacpp"] / "model.gguf"), "--outtype", "f16"]
    outs["llamacpp"].mkdir()
    env = {**os.environ, "PYTHONPATH": str(args.llama_cpp_src / "gguf-py")}
    commands = {"cp": (["cp", "-r", str(model), str(outs["cp"])], None), "vlmkit": (vlmkit, None),
                "llama.cpp": (llamacpp, env)}
    runs: dict[str, list[tuple[float, float]]] = {tool: [] for tool in commands}
    for _ in range(args.repeat):  # interleaved: page-cache writeback and other load hit every tool alike
        for tool, (cmd, tool_env) in commands.items():
            runs[tool].append(measure(cmd, tool_env))
            if tool != "llama.cpp":
                shutil.rmtree(outs[tool.replace(".", "")], ignore_errors=True)
    results = {tool: (float(np.median([r[0] for r in rs])), max(r[1] for r in rs)) for tool, rs in runs.items()}
    print(f"checkpoint: {size / 1e9:.2f} GB fp16 in {len(list(model.glob('*.safetensors')))} shards; "
          f"median of {args.repeat} interleaved runs")
    print(f"{'tool':<10} {'seconds':>8} {'peak RSS MB':>12} {'time / cp':>10}   all runs (s)")
    for tool, (seconds, rss) in results.items():
        every = " ".join(f"{r[0]:.2f}" for r in runs[tool])
        print(f"{tool:<10} {seconds:>8.2f} {rss:>12.0f} {seconds / results['cp'][0]:>10.2f}   {every}")
    v, l = results["vlmkit"], results["llama.cpp"]
    print(f"vlmkit vs llama.cpp: {l[0] / v[0]:.1f}x faster, {l[1] / v[1]:.1f}x less peak RSS "
          f"(targets: time <= 1.5x cp, RSS <= 300 MB)")
    for path in outs.values():
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
