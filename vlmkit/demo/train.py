"""Train the demo VLM from scratch: ``python -m vlmkit.demo.train [--out DIR] [--seed N]``.

Deterministic for a seed on a given CPU and torch build (fixed thread count, seeded torch and
per-image RNGs, fixed step count). Each training sequence is one fresh train-split image and
``turns`` question / answer turns in the chat template; the answer loss covers only answer tokens
and their end-of-sequence token. A training-only linear probe on the projector output predicts
which (color, shape) covers each patch (see :func:`patch_targets`); it is dropped when saving.

Run it alone where possible: two PyTorch processes on 2 cores slow each other down many-fold
(OMP_WAIT_POLICY=PASSIVE, set here unless already set, softens that; it does not change results).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from vlmkit.demo.model import EOS, IMAGE, IMAGE_TOKENS, PATCH_SIZE
from vlmkit.demo.questions import QA, random_qa
from vlmkit.demo.scenes import COLORS, IMAGE_SIZE, SHAPES, SUPERSAMPLE, Scene, mask, random_scene, render
from vlmkit.demo.dataset import scene_rng

THREADS = 2


@dataclass(frozen=True)
class Recipe:
    steps: int = 3000
    batch: int = 32
    turns: int = 1  # more turns per image amortise the image tokens but learned slower here
    aux_weight: float = 1.0  # weight of the per-patch probe loss
    lr: float = 2e-3
    warmup: int = 100
    half_life: int = 1500
    weight_decay: float = 0.01
    seed: int = 0


def encode_sample(tokenizer, image_index: int, recipe: Recipe) -> tuple[list[int], list[int], "object"]:
    """One train-split image with ``recipe.turns`` independent questions: (ids, labels, image)."""
    ids, labels, image, _ = encode_sample_with_scene(tokenizer, image_index, recipe)
    return ids, labels, image


def encode_sample_with_scene(tokenizer, image_index: int, recipe: Recipe):
    rng = scene_rng("train", image_index, recipe.seed)
    scene = random_scene(rng)
    ids, labels = encode_turns(tokenizer, [random_qa(scene, rng) for _ in range(recipe.turns)])
    return ids, labels, render(scene), scene


def patch_targets(scene: Scene):
    """(patches, colors x shapes) multi-hot: which (color, shape) covers >= 3 % of each patch.

    Training-only auxiliary target for a linear probe on the projector output: dense supervision
    makes the vision tower's features mean something within a few hundred steps, where the answer
    loss alone leaves the model guessing "Yes" for a long plateau.
    """
    import numpy as np

    grid = IMAGE_SIZE // PATCH_SIZE
    side = PATCH_SIZE * SUPERSAMPLE
    target = np.zeros((grid * grid, len(COLORS) * len(SHAPES)), dtype=np.float32)
    for obj in scene.objects:
        cover = np.asarray(mask(obj), dtype=np.float32).reshape(grid, side, grid, side).mean(axis=(1, 3)) / 255
        target[:, list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)] = cover.reshape(-1) >= 0.03
    return target


def encode_turns(tokenizer, turns: list[QA]) -> tuple[list[int], list[int]]:
    """Token ids of the chat-template conversation and labels that are -100 except on answers + EOS.

    Built segment by segment, split where the byte-level pre-tokenizer splits anyway (before "\\n",
    after ":", before an answer's leading space), so the concatenation equals tokenizing the rendered
    chat template (tests/test_demo_model.py checks this).
    """
    ids: list[int] = []
    labels: list[int] = []
    for turn, qa in enumerate(turns):
        prefix = "USER: " + IMAGE * IMAGE_TOKENS + "\n" if turn == 0 else "\nUSER: "
        prompt = _encode(tokenizer, prefix + qa.question + "\nASSISTANT:")
        answer = _encode(tokenizer, " " + qa.answer + EOS)
        ids += prompt + answer
        labels += [-100] * len(prompt) + answer
    return ids, labels


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def collate(tokenizer, samples):
    import numpy as np
    import torch

    width = max(len(ids) for ids, _, _ in samples)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _, _ in samples])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab, _ in samples])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _, _ in samples])
    pixels = np.stack([np.asarray(image, dtype=np.float32) for _, _, image in samples])
    pixel_values = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5  # = the processor's
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask, "pixel_values": pixel_values}


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then halve every ``half_life`` steps.

    It depends on the step alone, not on the run length, so a run of N steps equals the first N steps
    of any longer run: the shipped step count was picked from snapshots of one run.
    """
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    return recipe.lr * 0.5 ** ((step - recipe.warmup) / recipe.half_life)


def train(out: Path, recipe: Recipe = Recipe(), log_every: int = 50, snapshots: Path | None = None) -> Path:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads yield on a shared machine
    import numpy as np
    import torch
    from transformers import LlavaForConditionalGeneration

    from vlmkit.demo.model import build_config, build_processor, save, train_tokenizer

    torch.set_num_threads(THREADS)
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    tokenizer = train_tokenizer(recipe.seed)
    processor = build_processor(tokenizer)
    model = LlavaForConditionalGeneration(build_config(tokenizer))
    model.train()
    probe = torch.nn.Linear(model.config.text_config.hidden_size, len(COLORS) * len(SHAPES))
    projected = {}
    model.model.multi_modal_projector.register_forward_hook(lambda m, i, out: projected.update(out=out))
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=recipe.lr, betas=(0.9, 0.98),
                                  weight_decay=recipe.weight_decay)
    start, running, running_aux = time.time(), 0.0, 0.0
    for step in range(recipe.steps):
        samples = [encode_sample_with_scene(tokenizer, step * recipe.batch + k, recipe) for k in range(recipe.batch)]
        batch = collate(tokenizer, [sample[:3] for sample in samples])
        targets = torch.from_numpy(np.stack([patch_targets(sample[3]) for sample in samples]))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls (AMX where present), fp32 weights
            answer_loss = model(**batch).loss
            features = torch.nn.functional.normalize(projected["out"].float(), dim=-1) * 16  # scale-free probe
            aux = torch.nn.functional.binary_cross_entropy_with_logits(probe(features), targets)
        loss = answer_loss + recipe.aux_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running, running_aux = running + answer_loss.item(), running_aux + aux.item()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{recipe.steps} loss {running / log_every:.4f} aux {running_aux / log_every:.4f} "
                  f"lr {lr_at(step, recipe):.2e} {time.time() - start:.0f}s", flush=True)
            running, running_aux = 0.0, 0.0
        if snapshots is not None and (step + 1) % 250 == 0:  # for watching a run; does not touch its RNGs
            save(model, processor, snapshots / f"step{step + 1}")
    model.eval()
    save(model, processor, out)
    return out


def default_out() -> Path:
    return Path(__file__).resolve().parent / "weights"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out(), help="output directory (default: the shipped weights)")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--snapshots", type=Path, default=None, help="also save every 250 steps under this dir")
    args = parser.parse_args(argv)
    train(args.out, Recipe(steps=args.steps, seed=args.seed), snapshots=args.snapshots)


if __name__ == "__main__":
    main()
