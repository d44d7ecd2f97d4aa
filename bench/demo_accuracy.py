"""The demo VLM's MME-style test-split accuracy on transformers next to llama.cpp at f32, q8_0 and q4_k_m.

Converts the shipped demo model with `vlmkit convert` into a temporary directory per type, scores
each with `vlmkit demo score`'s code path, and prints one table (acc per category, MME total) plus
the difference from transformers.

    python -m bench.demo_accuracy [--types f32 q8_0 q4_k_m] [--n 200]
    python -m bench.demo_accuracy --margins 5   # only the 5 answers transformers decides by the smallest margin
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", default=["f32", "q8_0", "q4_k_m"])
    parser.add_argument("--n", type=int, default=None, help="test images (default: the full split)")
    parser.add_argument("--margins", type=int, metavar="K",
                        help="print the K answers whose first token wins by the smallest logit margin, and stop")
    args = parser.parse_args()

    from vlmkit.convert import convert
    from vlmkit.eval.vqa import evaluate, split_questions

    questions = split_questions("test", args.n)
    if args.margins:
        print_smallest_margins(questions, args.margins)
        return
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
    from vlmkit.eval.vqa import load

    if "llama.cpp f32" not in results:
        return
    net, processor = load("demo")
    pairs = zip(questions, results["transformers"]["predictions"], results["llama.cpp f32"]["predictions"])
    for question, ours, theirs in pairs:
        if ours["prediction"] == theirs["prediction"]:
            continue
        (first, second), (v1, v2) = _top2(net, processor, question)
        print(f"f32 difference: {question.question!r}: transformers {ours['prediction']!r}, llama.cpp "
              f"{theirs['prediction']!r}; transformers' top-2 first tokens {first!r} {v1:.4f} vs "
              f"{second!r} {v2:.4f} (margin {v1 - v2:.1e})")


def print_smallest_margins(questions, k: int) -> None:
    """The answers the fp32 model decides by the narrowest first-token margin (top-1 minus top-2 logit, the same
    as their log-probability difference): the ones any rounding of the weights flips first."""
    from vlmkit.eval.vqa import load

    net, processor = load("demo")
    rows = []
    for index, question in enumerate(questions):
        words, values = _top2(net, processor, question)
        rows.append((values[0] - values[1], index, question, words))
    for margin, index, question, (first, second) in sorted(rows, key=lambda row: row[0])[:k]:
        print(f"margin {margin:.3f}  #{index} ({question.category}, truth {question.answer!r}): "
              f"{question.question!r} -> {first!r} over {second!r}")


def _top2(net, processor, question) -> tuple[tuple[str, str], tuple[float, float]]:
    """transformers' two most likely first answer tokens for the question, with their logits."""
    import torch

    from vlmkit.eval.vqa import prompt

    inputs = processor(images=[question.image], text=[prompt(processor, question.question)], return_tensors="pt")
    with torch.inference_mode():
        top = torch.topk(net(**inputs).logits[0, -1], 2)
    words = [processor.tokenizer.decode([int(i)]) for i in top.indices]
    return (words[0], words[1]), (float(top.values[0]), float(top.values[1]))


def _agreement(reference: dict, other: dict) -> float:
    pairs = list(zip(reference["predictions"], other["predictions"]))
    return 100.0 * sum(a["prediction"] == b["prediction"] for a, b in pairs) / len(pairs)


if __name__ == "__main__":
    main()
