"""Tokens/s of one Llama on the transformers backend (bf16, fp32) and the llama.cpp backend (f16, q8_0,
q4_k_m), side by side, through `vlmkit.load(...).generate` — the path `vlmkit run` takes.

    python bench/run.py                 # ~1.1 B TinyLlama-shaped model (needs ~10 GB RAM, minutes)
    python bench/run.py --size small    # ~60 M, seconds

The model is random (built from a transformers LlamaConfig, saved as bf16 safetensors, converted with
`vlmkit convert`); speed does not depend on the weights' values. The tokenizer is the zoo llama's small
sentencepiece model, so the vocabulary (and the LM head) is smaller than a real model's: the
transformer body dominates. Each configuration runs in its own process, so peak RSS is its own.
Issue 5 measured on 2 threads, 1 B Llama: transformers bf16 8.4 tok/s, fp32 4.9; llama.cpp f16 16.7,
q4_k_m 56.4.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ is sys.path[0] and bench/inspect.py would shadow the standard library's inspect.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "1b": (2048, 5632, 22, 32, 4),
    "small": (512, 1408, 8, 8, 4),
}
CONFIGS = [("transformers", "fp32"), ("transformers", "bf16"), ("llamacpp", "f16"), ("llamacpp", "q8_0"),
           ("llamacpp", "q4_k_m")]
PROMPT = "Tell me a story about a red square and a blue circle."


def build_model(out: Path, size: str, layers: int | None = None) -> int:
    """Save a random Llama of the given shape (``layers`` decoder blocks instead of the size's own count: a
    cheaper model with the same per-block cost) with the zoo llama's tokenizer; return its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vlmkit.zoo import build

    hidden, inter, size_layers, heads, kv = SIZES[size]
    layers = layers or size_layers
    tokenizer_dir = build("llama")
    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    return sum(p.numel() for p in model.parameters())


def measure(model: Path, backend: str, dtype: str, threads: int, tokens: int) -> dict:
    """One configuration, in this process: warm up, then the median of three timed generations."""
    import statistics

    import vlmkit

    kwargs = {"dtype": dtype} if backend == "transformers" else {}
    runner = vlmkit.load(model, backend=backend, device="cpu", threads=threads, **kwargs)
    runner.generate(PROMPT, max_new_tokens=4)
    runs = [runner.generate(PROMPT, max_new_tokens=tokens) for _ in range(3)]
    return {"tok_s": statistics.median(r.tokens_per_s for r in runs),
            "ttft_s": statistics.median(r.time_to_first_token_s for r in runs),
            "tokens": runs[0].completion_tokens, "peak_rss_mb": runs[-1].peak_rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "BACKEND", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(Path(args.one[0]), args.one[1], args.one[2], args.threads, args.tokens)))
        return
    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-run-") as tmp:
        run_all(Path(tmp), args)


def run_all(tmp: Path, args: argparse.Namespace) -> None:
    from vlmkit.convert import convert

    hf = tmp / "hf"
    n_params = build_model(hf, args.size)
    paths = {"transformers": hf}
    for _, dtype in CONFIGS[2:]:
        paths[dtype] = convert(hf, tmp / dtype, dtype=dtype, verify=False).model_path
    print(f"random Llama, {n_params / 1e6:.0f} M parameters, {args.threads} threads, {args.tokens} new tokens, "
          f"greedy; tokens/s = decode rate after the first token")
    rows = []
    for backend, dtype in CONFIGS:
        model = paths["transformers" if backend == "transformers" else dtype]
        cmd = [sys.executable, __file__, "--threads", str(args.threads), "--tokens", str(args.tokens),
               "--one", str(model), backend, dtype]
        rows.append((backend, dtype, json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                              text=True).stdout.strip().splitlines()[-1])))
    base = next(r["tok_s"] for b, d, r in rows if (b, d) == ("transformers", "fp32"))
    print(f"{'backend':<13}{'dtype':<8}{'tok/s':>8}{'vs fp32':>9}{'TTFT s':>8}{'peak RSS MB':>13}")
    for backend, dtype, r in rows:
        print(f"{backend:<13}{dtype:<8}{r['tok_s']:>8.1f}{r['tok_s'] / base:>8.2f}x{r['ttft_s']:>8.3f}"
              f"{r['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
