"""vlmkit RTN / AWQ / GPTQ W4 (group 128) against llm-compressor's GPTQ W4A16 on the same model and the same
calibration tokens: wall time, peak RSS (each run in its own process, its own ``VmHWM``: vlmkit.memory.peak_rss_mb)
and mean KLD / same top-1 against the source model on held-out prompts, printed as ratios to llm-compressor.

    python -m bench.quantize                   # ~1.1 B Llama (TinyLlama's shape, random bf16): long
    python -m bench.quantize --size small      # ~60 M, minutes
    python -m bench.quantize --demo            # also the demo VLM: KLD and the MME-style total
    python -m bench.quantize --methods gptq    # only some of vlmkit's methods (AWQ's scale search is the long one)
    python -m bench.quantize --methods awq,awq-clip --layers 2   # AWQ with and without AutoAWQ's clipping
    python -m bench.quantize --layers 4        # the 1 B shape with 4 decoder blocks: same per-block cost, quicker

llm-compressor pins another transformers, so it runs from its own venv (``--llmc-python``, default
/work/venvs/llmcompressor/bin/python; created with ``python -m venv --system-site-packages`` and
``pip install llmcompressor``). Every model is scored the same way: its export loaded back with transformers'
``from_pretrained`` (compressed-tensors decompresses it) and compared with the source model. vlmkit's GPTQ runs
with act-order, as llm-compressor's ``GPTQModifier`` does by default (``actorder="static"``: vlmkit's
``--act-order``, static groups), and with vlmkit's default searched scales (each group's range shrunk 1 … 0.8
to its lowest rounding error; llm-compressor's default is plain min/max, its ``observer="mse"`` the same idea);
the rest is the same on both sides (1 % dampening, 128-column blocks, symmetric int4 groups of 128).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import subprocess
import tempfile
import time

METHODS = ("rtn", "awq", "gptq")  # the default runs
SETTINGS = {"rtn": {"method": "rtn"}, "awq": {"method": "awq"}, "gptq": {"method": "gptq", "act_order": True},
            "awq-clip": {"method": "awq", "awq_clip": True}}  # vlmkit's settings per run name
LLMC_PYTHON = "/work/venvs/llmcompressor/bin/python"


def calibration_texts(n: int, held_out: int) -> tuple[list[str], list[str]]:
    """Demo questions (train split) for calibration, test-split questions + fixed texts held out."""
    from vlmkit.demo.dataset import make_split
    from vlmkit.quant.calibration import HELD_OUT_TEXTS

    train = [qa.question for item in make_split("train", n) for qa in item.questions][:n]
    test = [qa.question for item in make_split("test", held_out) for qa in item.questions][:held_out]
    return train, [*test, *HELD_OUT_TEXTS]


def worker_vlmkit(model: str, out: str, method: str, calib: str, n: int) -> dict:
    from vlmkit.quant.pipeline import quantize

    start = time.perf_counter()
    result = quantize(model, out, bits=4, group_size=128, calib=calib, samples=n, held_out=2, progress=False,
                      **SETTINGS[method])
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": result.peak_rss_mb,
            "phases_s": {k: round(v, 1) for k, v in result.timings.items()}}


def worker_llmc(model: str, out: str, calib: str, n: int, vlm: bool) -> dict:
    """llm-compressor's documented W4A16 GPTQ recipe on the same tokens (run under its own venv)."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoTokenizer,
    )

    from vlmkit.memory import peak_rss_mb

    start = time.perf_counter()
    texts = [line for line in Path(calib).read_text().splitlines() if line.strip()][:n]
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [dict(tokenizer(t)) for t in texts]
    auto = AutoModelForImageTextToText if vlm else AutoModelForCausalLM
    net = auto.from_pretrained(model, dtype=torch.float32 if vlm else "auto")
    ignore = ["lm_head", "re:.*vision_tower.*", "re:.*multi_modal_projector.*"]
    recipe = GPTQModifier(targets="Linear", scheme="W4A16", ignore=ignore)
    oneshot(model=net, dataset=Dataset.from_list(rows), recipe=recipe, num_calibration_samples=len(rows),
            max_seq_length=512)
    net.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    return {"seconds": time.perf_counter() - start,
            "peak_rss_mb": peak_rss_mb()}


def worker_llmc_gptq(tensors: str) -> dict:
    """llm-compressor's own ``quantize_weight`` on a saved (W, H, scale, zero point): the reference GPTQ."""
    import torch
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    saved = torch.load(tensors)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=128)
    q, _, _ = quantize_weight(saved["w"][None], saved["h"][None], saved["scale"][None], saved["zero"][None], None,
                              args)
    torch.save(q[0], tensors + ".llmc")
    return {}


def gptq_parity(llmc_python: str, work: Path) -> str:
    """vlmkit's GPTQ and llm-compressor's on one Linear (same weight, Hessian, scales): how many values agree."""
    import torch

    from vlmkit.quant.gptq import Hessian, gptq
    from vlmkit.quant.rtn import qparams, quant_args

    torch.manual_seed(0)
    w = torch.randn(512, 1024)
    x = torch.randn(8192, 1024) @ (torch.randn(1024, 1024) * 0.05 + torch.eye(1024))
    hessian = Hessian(1024)
    hessian.add(x)
    args = quant_args(4, True, 128)
    scale, zero = qparams(w, args)
    path = work / "gptq.pt"
    torch.save({"w": w, "h": hessian.matrix, "scale": scale, "zero": zero}, path)
    done = run_worker(llmc_python, "llmc-gptq", str(path))
    if "error" in done:
        return f"llm-compressor's quantize_weight failed: {done['error']}"
    theirs, ours = torch.load(str(path) + ".llmc"), gptq(w, hessian.matrix, args).weight
    same = float((theirs == ours).float().mean())
    return (f"GPTQ on one 512×1024 Linear, vlmkit vs llm-compressor's quantize_weight: {100 * same:.3f} % of "
            f"the weights identical, max |Δ| {float((theirs - ours).abs().max()):.3g}")


def run_worker(python: str, *args: str) -> dict:
    done = subprocess.run([python, "-m", "bench.quantize", *args], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def kld_against_source(source: Path, candidate: Path, texts: list[str]) -> dict:
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from vlmkit.metrics.logits import logit_stats
    from vlmkit.runtime.transformers_backend import model_class

    auto, _ = model_class(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    logits = []
    for path in (source, candidate):
        net = auto.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            logits.append(np.concatenate([net(**tokenizer(t, return_tensors="pt")).logits[0].numpy()
                                          for t in texts]))
        del net
    stats = logit_stats(*logits)
    return {"mean_kld": stats.mean_kld, "same_top1": stats.same_top1}


def compare(model: Path, work: Path, n: int, llmc_python: str, vlm: bool, demo_score: bool,
            methods: tuple[str, ...] = METHODS) -> list[dict]:
    calib, held = calibration_texts(n, 16)
    calib_file = work / "calib.txt"
    calib_file.write_text("\n".join(calib) + "\n")
    rows = []
    for method in methods:
        out = work / f"vlmkit-{method}"
        print(f"vlmkit {method} ...", file=sys.stderr, flush=True)
        row = {"name": f"vlmkit {method.upper()}", **run_worker(sys.executable, "vlmkit", str(model), str(out),
                                                               method, str(calib_file), str(n))}
        rows.append((row, out))
    out = work / "llmc-gptq"
    row = {"name": "llm-compressor GPTQ", **run_worker(llmc_python, "llmc", str(model), str(out),
                                                       str(calib_file), str(n), str(int(vlm)))}
    rows.append((row, out))
    results = []
    for row, out in rows:
        if "error" not in row:
            try:
                row.update(kld_against_source(model, out, held))
                if demo_score:
                    row["demo_total"] = demo_total(out)
            except Exception as error:  # noqa: BLE001 - a reload failure is a result to report
                row["reload_error"] = str(error).splitlines()[0][:120]
        print(json.dumps(row), file=sys.stderr, flush=True)  # partial results survive an interrupted run
        results.append(row)
    return results


def demo_total(model: Path) -> float:
    """The MME-style total on the demo's 6,000-question test split (the issue's budgets are judged there)."""
    from vlmkit.eval.vqa import evaluate, load_questions

    return float(evaluate(load_questions("demo-large"), model)["total"])


def print_table(title: str, rows: list[dict]) -> None:
    ref = next((r for r in rows if r["name"].startswith("llm-compressor") and "mean_kld" in r), None)
    print(f"\n{title}")
    print("| run | time s | × llmc | peak RSS MB | × llmc | mean KLD | × llmc | same top-1 % | demo total |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        if "error" in r or "reload_error" in r:
            print(f"| {r['name']} | {r.get('seconds', 0):.1f} | | {r.get('peak_rss_mb', 0):.0f} | | "
                  f"{r.get('error') or r.get('reload_error')} | | | |")
            continue

        def ratio(key: str, r: dict = r) -> str:
            return f"{r[key] / ref[key]:.2f}" if ref and ref.get(key) else "-"

        print(f"| {r['name']} | {r['seconds']:.1f} | {ratio('seconds')} | {r['peak_rss_mb']:.0f} | "
              f"{ratio('peak_rss_mb')} | {r['mean_kld']:.4g} | {ratio('mean_kld')} | {100 * r['same_top1']:.2f} | "
              f"{r.get('demo_total', '-')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("1b", "small"), default="1b")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--layers", type=int, help="decoder blocks of the random Llama (default: the size's own)")
    parser.add_argument("--demo", action="store_true", help="also compare on the demo VLM (with its score)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"vlmkit runs, comma-separated, of {', '.join(SETTINGS)} (awq-clip: AWQ with AutoAWQ's "
                             "clipping search)")
    parser.add_argument("--llmc-python", default=LLMC_PYTHON)
    args = parser.parse_args()
    methods = tuple(m for m in args.methods.split(",") if m)
    if not set(methods) <= set(SETTINGS):
        parser.error(f"--methods: choose from {', '.join(SETTINGS)}")
    from bench.run import build_model
    from vlmkit.hub import demo_path

    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-quantize-") as tmp:
        work = Path(tmp)
        print(gptq_parity(args.llmc_python, work))
        if args.demo:
            (work / "demo").mkdir()
            print_table("demo VLM (LLaVA: SigLIP + Llama), W4 group 128",
                        compare(demo_path(), work / "demo", args.samples, args.llmc_python, True, True, methods))
        model = work / "llama"
        n_params = build_model(model, args.size, args.layers)
        (work / "llama-runs").mkdir()
        print_table(f"random Llama, {n_params / 1e9:.2f} B parameters, W4 group 128",
                    compare(model, work / "llama-runs", args.samples, args.llmc_python, False, False, methods))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "vlmkit":
        print(json.dumps(worker_vlmkit(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "llmc-gptq":
        print(json.dumps(worker_llmc_gptq(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "llmc":
        print(json.dumps(worker_llmc(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                                     bool(int(sys.argv[6])))))
    else:
        main()
