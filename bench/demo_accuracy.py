"""The demo VLM's MME-style test-split accuracy on transformers next to llama.cpp at f32, q8_0 and q4_k_m.

Converts the shipped demo model with `vlmkit convert` into a temporary directory per type, scores
each with `vlmkit demo score`'s code path, and prints one table (acc per category, MME total) plus
the difference from transformers.

    python -m bench.demo_accuracy [--types f32 q8_0 q4_k_m] [--n 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["f32", "q8_0", "q4_k_m"])
    parser.add_argument("--n", type=int, default=None, help="test images (default: the full split)")
    args = parser.parse_args()

    from vlmkit.convert import convert
    from vlmkit.eval.vqa import evaluate, split_questions

    questions = split_questions("test", args.n)
    # Reference: transformers one question at a time through vlmkit.load (what `vlmkit run` does); the
    # batched, left-padded generate of `vlmkit demo score` is shown too (padding can move a near-tie).
    results = {"transformers": evaluate(questions, "demo", backend="auto"),
               "transformers batched": evaluate(questions, "demo")}
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in args.types:
            out = Path(tmp) / qtype
            convert("demo", out, dtype=qtype, verify=False)
            results[f"llama.cpp {qtype}"] = evaluate(questions, out, backend="llamacpp")
    print_table(results)
    explain_f32_differences(questions, results)


def print_table(results: dict[str, dict]) -> None:
    """Markdown (what the README shows): acc per category, MME total and agreement with transformers."""
    names = list(results)
    categories = [c["category"] for c in results[names[0]]["categories"]]
    print("| category | " + " | ".join(names) + " |")
    print("|---|" + "--:|" * len(names))
    for category in categories:
        row = [next(c for c in results[n]["categories"] if c["category"] == category)["acc"] for n in names]
        print(f"| {category} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    print("| MME total (yes/no) | " + " | ".join(f"{results[n]['total']:.2f}" for n in names) + " |")
    agree = [_agreement(results[names[0]], results[n]) for n in names]
    print("| same answer as transformers % | " + " | ".join(f"{a:.2f}" for a in agree) + " |")


def explain_f32_differences(questions, results: dict[str, dict]) -> None:
    """For each answer llama.cpp f32 gives differently, transformers' own top-2 first-token logits: a
    near-tie there is decided by runtime rounding (ggml's fp16 GELU table and conv), not the conversion."""
    import torch

    from vlmkit.eval.vqa import load, prompt

    if "llama.cpp f32" not in results:
        return
    net, processor = load("demo")
    pairs = zip(questions, results["transformers"]["predictions"], results["llama.cpp f32"]["predictions"])
    for question, ours, theirs in pairs:
        if ours["prediction"] == theirs["prediction"]:
            continue
        inputs = processor(images=[question.image], text=[prompt(processor, question.question)], return_tensors="pt")
        with torch.inference_mode():
            top = torch.topk(net(**inputs).logits[0, -1], 2)
        words = [processor.tokenizer.decode([int(i)]) for i in top.indices]
        print(f"f32 difference: {question.question!r}: transformers {ours['prediction']!r}, llama.cpp "
              f"{theirs['prediction']!r}; transformers' top-2 first tokens {words[0]!r} {top.values[0]:.4f} vs "
              f"{words[1]!r} {top.values[1]:.4f} (margin {top.values[0] - top.values[1]:.1e})")


def _agreement(reference: dict, other: dict) -> float:
    pairs = list(zip(reference["predictions"], other["predictions"]))
    return 100.0 * sum(a["prediction"] == b["prediction"] for a, b in pairs) / len(pairs)


if __name__ == "__main__":
    main()
