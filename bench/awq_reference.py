"""vlmkit's AWQ W4 (group 128) against llm-compressor's own AWQ on the demo VLM, same calibration samples (the
first N questions of the demo's training split, image + question through the processor and chat template),
both scored the same way on the test split (600 questions): MME-style total per category, mean KLD against
the fp32 model over all prompt positions and at the answer position, and the questions each one flips.

    python -m bench.awq_reference                 # 64 samples, symmetric (vlmkit's default grid)
    python -m bench.awq_reference --samples 128 --asym

llm-compressor pins another transformers, so its AWQ runs from its own venv (``--llmc-python``, as in
bench/quantize.py). Its default mappings stop on a LLaVA with "AWQ needs to match a single smoothlayer" (the
vision tower's Linears match its regexes too), so the LLaVA's language model is named explicitly: the same four
input-sharing groups as its default Llama mapping (input_layernorm -> q/k/v, v -> o, post_attention_layernorm ->
gate/up, up -> down). Its recipe is AWQModifier (duo_scaling, n_grid 20) then QuantizationModifier W4A16 on the
language model's Linears; vision tower, projector and lm_head are ignored, as vlmkit keeps them.

Both exports are read back through compressed-tensors' own ``PackedQuantizationCompressor.decompress`` into the
fp32 demo model: llm-compressor's LLaVA export does not reload in transformers 5 (its ``ignore`` names the
vision tower as on disk, see issue 13), and neither does an asymmetric pack-quantized one (transformers 5.24
expects the zero points unpacked).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import subprocess
import tempfile

LLMC_PYTHON = "/work/venvs/llmcompressor/bin/python"
DISK_TO_MEMORY = (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
                  ("vision_tower.vision_model.", "model.vision_tower."),
                  ("multi_modal_projector.", "model.multi_modal_projector."))


def worker_llmc(model: str, out: str, n: int, symmetric: bool) -> None:
    """llm-compressor's AWQ on the demo VLM with image+text calibration (run under its own venv)."""
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.transform.awq.mappings import AWQMapping
    from llmcompressor.pipelines.cache import IntermediatesCache
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmkit.quant.calibration import load_samples

    IntermediatesCache.pin_memory = lambda self, index: None  # 0.14 pins the cache for its grid: needs CUDA
    processor = AutoProcessor.from_pretrained(model)
    rows = []
    for sample in load_samples("demo", n, 0)[0]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.text}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(images=[sample.image], text=[text], return_tensors="pt")
        rows.append({k: v.tolist() for k, v in inputs.items()})
    lm = "re:.*language_model.*"
    mappings = [AWQMapping(lm + "input_layernorm$", [lm + "q_proj$", lm + "k_proj$", lm + "v_proj$"]),
                AWQMapping(lm + "v_proj$", [lm + "o_proj$"]),
                AWQMapping(lm + "post_attention_layernorm$", [lm + "gate_proj$", lm + "up_proj$"]),
                AWQMapping(lm + "up_proj$", [lm + "down_proj$"])]
    recipe = [AWQModifier(mappings=mappings, duo_scaling=True),
              QuantizationModifier(targets="Linear", scheme="W4A16" if symmetric else "W4A16_ASYM",
                                   ignore=["lm_head", "re:.*vision_tower.*", "re:.*multi_modal_projector.*"])]
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32)
    oneshot(model=net, dataset=Dataset.from_list(rows), recipe=recipe, num_calibration_samples=len(rows),
            pipeline="sequential", sequential_targets=["LlamaDecoderLayer"], batch_size=1,
            data_collator=lambda batch: {k: torch.tensor(v) for k, v in batch[0].items()})
    net.save_pretrained(out, save_compressed=True)
    processor.save_pretrained(out)


def load_dequantized(folder: Path):
    """(fp32 demo model with ``folder``'s tensors, decompressed by compressed-tensors, processor)."""
    import torch
    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from safetensors import safe_open

    from vlmkit.eval.vqa import load

    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    weights = next(iter(config["config_groups"].values()))["weights"]
    scheme = QuantizationScheme(targets=["Linear"],
                                weights=QuantizationArgs(**{k: v for k, v in weights.items() if v is not None}))
    net, processor = load("demo")
    state: dict[str, torch.Tensor] = {}
    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = list(f.keys())
        packed = {k.removesuffix(".weight_packed") for k in keys if k.endswith(".weight_packed")}
        for key in keys:
            module, _, local = key.rpartition(".")
            if module in packed:
                if local == "weight_packed":
                    parts = {k.rpartition(".")[2]: f.get_tensor(k) for k in keys if k.startswith(module + ".weight_")}
                    weight = PackedQuantizationCompressor.decompress(parts, scheme)["weight"]
                    state[_memory_name(module + ".weight")] = weight.float()
            else:
                state[_memory_name(key)] = f.get_tensor(key).float()
    unknown = set(state) - set(net.state_dict())
    if unknown:
        raise ValueError(f"{folder}: tensors the demo model does not have: {sorted(unknown)[:3]}")
    net.load_state_dict(state, strict=False)
    return net, processor


def _memory_name(disk: str) -> str:
    for on_disk, in_memory in DISK_TO_MEMORY:
        if disk.startswith(on_disk):
            return in_memory + disk.removeprefix(on_disk)
    return disk


def score(net, processor, reference, questions) -> dict:
    """Total, categories, mean KLD against ``reference`` (all positions / answer position), predictions."""
    import numpy as np
    import torch

    from vlmkit.eval.vqa import evaluate, prompt
    from vlmkit.metrics.logits import kld

    processor.tokenizer.padding_side = "left"
    result = evaluate(questions, net=net, processor=processor)
    all_positions, answer = [], []
    with torch.inference_mode():
        for q in questions:
            x = processor(images=[q.image], text=[prompt(processor, q.question)], return_tensors="pt")
            k = kld(reference(x), net(**x, use_cache=False).logits[0].double().numpy())
            all_positions.append(k.mean())
            answer.append(k[-1])
    return {"total": result["total"], "categories": {c["category"]: c["score"] for c in result["categories"]
                                                     if c["score"] is not None},
            "mean_kld": float(np.mean(all_positions)), "answer_kld": float(np.mean(answer)),
            "correct": [p["correct"] for p in result["predictions"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--asym", action="store_true", help="asymmetric grid (AutoAWQ's default, W4A16_ASYM)")
    parser.add_argument("--llmc-python", default=LLMC_PYTHON)
    args = parser.parse_args()
    import torch

    from vlmkit.eval.vqa import evaluate, load, split_questions
    from vlmkit.hub import demo_path
    from vlmkit.metrics.paired import exact_mcnemar
    from vlmkit.quant.pipeline import quantize

    questions = split_questions("test")
    source, source_processor = load("demo")
    fp32 = evaluate(questions, net=source, processor=source_processor)
    fp32_correct = [p["correct"] for p in fp32["predictions"]]

    def reference(x):
        with torch.inference_mode():
            return source(**x, use_cache=False).logits[0].double().numpy()

    with tempfile.TemporaryDirectory(prefix="vlmkit-bench-awq-") as tmp:
        ours, theirs = Path(tmp) / "vlmkit", Path(tmp) / "llmc"
        quantize("demo", ours, method="awq", bits=4, group_size=128, symmetric=not args.asym, calib="demo",
                 samples=args.samples, held_out=1, progress=False)
        done = subprocess.run([args.llmc_python, "-m", "bench.awq_reference", "llmc", str(demo_path()), str(theirs),
                               str(args.samples), str(int(not args.asym))], capture_output=True, text=True,
                              check=False, cwd=Path(__file__).resolve().parent.parent)
        if done.returncode != 0:
            raise SystemExit("llm-compressor's AWQ failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
        rows = {"vlmkit AWQ": score(*load_dequantized(ours), reference, questions),
                "llm-compressor AWQ": score(*load_dequantized(theirs), reference, questions)}
    grid = "asym" if args.asym else "sym"
    print(f"\ndemo VLM, AWQ W4 {grid} group 128, {args.samples} calibration questions; test split, fp32 total "
          f"{fp32['total']:.0f}")
    print("| run | total | " + " | ".join(rows["vlmkit AWQ"]["categories"]) + " | mean KLD | answer-position KLD "
          "| questions flipped vs fp32: lost / gained | McNemar p vs fp32 |")
    print("|---|--:|" + "--:|" * len(rows["vlmkit AWQ"]["categories"]) + "--:|--:|---|--:|")
    for name, r in rows.items():
        lost = [i for i, (a, b) in enumerate(zip(fp32_correct, r["correct"])) if a and not b]
        gained = [i for i, (a, b) in enumerate(zip(fp32_correct, r["correct"])) if b and not a]
        print(f"| {name} | {r['total']:.0f} | " + " | ".join(f"{v:.0f}" for v in r["categories"].values()) +
              f" | {r['mean_kld']:.4f} | {r['answer_kld']:.5f} | {lost} / {gained} | "
              f"{exact_mcnemar(fp32_correct, r['correct']).p_value:.2f} |")
    test = exact_mcnemar(rows["vlmkit AWQ"]["correct"], rows["llm-compressor AWQ"]["correct"])
    print(f"vlmkit vs llm-compressor: {test.only_first} answers right only in vlmkit's, {test.only_second} only in "
          f"llm-compressor's (exact McNemar p = {test.p_value:.2f})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "llmc":
        worker_llmc(sys.argv[2], sys.argv[3], int(sys.argv[4]), bool(int(sys.argv[5])))
    else:
        main()
