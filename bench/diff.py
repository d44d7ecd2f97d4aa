"""Benchmark: peak memory and time of `vlmkit diff` vs the obvious script (load both state dicts with
safetensors, compare tensor by tensor), on a ~0.7 GB fp32 Llama-shaped pair with two layers changed.

    python -m bench.diff [--workdir /tmp/vlmkit-bench-diff]

Each tool runs as a child of a fresh Python whose RUSAGE_CHILDREN ru_maxrss is its peak RSS; both read
the same files after a warm-up read. The target (issue 10): memory about two tensors whatever the model
size, i.e. vlmkit's peak minus an idle interpreter with torch imported stays within a few largest tensors,
while the naive script holds both models.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HIDDEN, FFN, LAYERS, VOCAB = 1024, 2816, 12, 32000
CHANGED = ("model.layers.3.self_attn.q_proj.weight", "model.layers.7.mlp.down_proj.weight")

NAIVE = """
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
changed = [n for n in a if not np.array_equal(a[n], b[n])]
print(len(changed))
"""
IDLE = "import torch, numpy, safetensors"
VLMKIT = "from vlmkit.diff import diff_checkpoints; import sys; print(diff_checkpoints(sys.argv[1], sys.argv[2]).counts())"


def shapes() -> dict[str, tuple[int, ...]]:
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out.update({p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
                    p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                    p + "mlp.gate_proj.weight": (FFN, HIDDEN), p + "mlp.up_proj.weight": (FFN, HIDDEN),
                    p + "mlp.down_proj.weight": (HIDDEN, FFN), p + "input_layernorm.weight": (HIDDEN,),
                    p + "post_attention_layernorm.weight": (HIDDEN,)})
    return out


def build(workdir: Path) -> tuple[Path, Path]:
    from safetensors.numpy import save_file

    a, b = workdir / "a", workdir / "b"
    if (b / "model.safetensors").exists():
        return a, b
    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal(s, dtype=np.float32) * 0.02 for n, s in shapes().items()}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": 16,
              "num_key_value_heads": 16, "vocab_size": VOCAB, "tie_word_embeddings": False}
    for folder in (a, b):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config))
        if folder is b:
            for name in CHANGED:
                tensors[name] = tensors[name] * 1.01
        save_file(tensors, str(folder / "model.safetensors"))
    return a, b


def peak(code: str, *args: str) -> tuple[float, float, str]:
    """(peak RSS MB, seconds, stdout) of ``python -c code args`` as a child of a fresh wrapper."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "out = subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], capture_output=True, "
               "text=True, check=True).stdout; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t, "
               "out.strip().replace(' ', ''))")
    line = subprocess.run([sys.executable, "-c", wrapper, code, *args], capture_output=True, text=True,
                          check=True).stdout.split()
    return float(line[0]), float(line[1]), line[2] if len(line) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/vlmkit-bench-diff"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    a, b = build(args.workdir)
    files = [str(a / "model.safetensors"), str(b / "model.safetensors")]
    for f in files:   # same page cache for both tools
        Path(f).read_bytes()
    model_mb = Path(files[0]).stat().st_size / 2**20
    largest_mb = max(np.prod(s) for s in shapes().values()) * 4 / 2**20
    idle_mb, _, _ = peak(IDLE)
    naive_mb, naive_s, naive_out = peak(NAIVE, *files)
    vlmkit_mb, vlmkit_s, vlmkit_out = peak(VLMKIT, str(a), str(b))
    print(f"model {model_mb:.0f} MB per side, largest tensor {largest_mb:.0f} MB, idle interpreter {idle_mb:.0f} MB")
    print(f"naive  (load_file both): {naive_mb:.0f} MB peak, {naive_s:.2f} s, changed: {naive_out}")
    print(f"vlmkit diff            : {vlmkit_mb:.0f} MB peak, {vlmkit_s:.2f} s, {vlmkit_out}")
    print(f"vlmkit peak above idle = {(vlmkit_mb - idle_mb) / largest_mb:.1f} x largest tensor "
          f"(naive: {(naive_mb - idle_mb) / largest_mb:.1f} x); peak ratio vlmkit / naive = {vlmkit_mb / naive_mb:.2f}, "
          f"time ratio = {vlmkit_s / naive_s:.2f}")
    if not args.keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
