"""Train the demo VLM from scratch: ``python -m vlmkit.demo.train --out DIR [--seed N]``.

Deterministic for a seed on a given CPU and torch build (fixed thread count, seeded torch and
per-image RNGs, fixed step count). Each training sequence is one fresh train-split image and
``turns`` question / answer turns in the chat template; the answer loss covers only answer tokens
and their end-of-sequence token. Two training-only linear probes add dense targets and are dropped
when saving:

- on the projector output, which (color, shape) covers each patch (:func:`patch_targets`), so the
  vision tower's features mean something within a few hundred steps;
- on the LM's image-token states (``evidence_layer``), whether the patch shows the object that answers
  the question (:func:`evidence_targets`). The chat template puts the question before the image, so
  every image token can see it. A Yes / No answer is a one-bit comparison of question and image that
  gives no useful gradient until the whole circuit exists: with the answer loss alone (image first or
  question first) every yes/no category was still at chance after 3,000 steps, the model saying "Yes"
  to everything while it had learned the free-form answers.

Run it alone where possible: two PyTorch processes on 2 cores slow each other down many-fold
(OMP_WAIT_POLICY=PASSIVE softens that, at a third more time per step when the process runs alone;
it does not change results). The shipped weights were trained under ``chrt -r 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

from vlmkit.demo.model import EOS, IMAGE, IMAGE_TOKENS, PATCH_SIZE
from vlmkit.demo.questions import QA, random_qa
from vlmkit.demo.scenes import COLORS, IMAGE_SIZE, SHAPES, SUPERSAMPLE, Scene, Shape, mask, random_scene, render
from vlmkit.demo.dataset import scene_rng

THREADS = 2


@dataclass(frozen=True)
class Recipe:
    steps: int = 9500  # best of the 250-step snapshots 8000..10000 on a validation split (train, seed 1)
    batch: int = 32
    turns: int = 1  # more turns per image amortise the image tokens but learned slower here
    aux_weight: float = 1.0  # weight of the per-patch probe loss
    evidence_weight: float = 2.0  # weight of the per-image-token evidence probe loss
    evidence_layer: int = 2  # LM layer (hidden_states index) whose image-token states the evidence probe reads
    lr: float = 2e-3
    warmup: int = 100
    half_life: int = 3000
    weight_decay: float = 0.01
    seed: int = 0
    phrased: float = 0.0  # share of questions ending in a benchmark's request for the answer's form
    big_lone: float = 0.0  # share of one-shape scenes drawn big (scenes.random_scene)
    first_image: int = 0  # training-split index of the first image (a later stage sees fresh scenes)
    position_share: float = 0.0  # share of questions that are yes/no position questions (on top of the mix)


# The shipped weights: FIRST from scratch (plain questions, shapes up to 24 px wide), then SECOND continuing from
# FIRST's weights and tokenizer on questions asked the way benchmarks ask and scenes with big lone shapes. Trained
# from scratch on that mix, the model still answered position questions at chance after 12,000 steps: the
# circuits form on the plain task, and the second stage teaches the phrasings and sizes on top. SECOND left position
# at 88 % asked plainly and 79 % asked MME's way (test split); THIRD adds 30 % position questions for 4,000 steps, the
# best 1,000-step snapshot of a 5,000-step run on the validation split (highest lowest yes/no category, both ways).
FIRST = Recipe()
SECOND = Recipe(steps=8000, lr=5e-4, warmup=100, half_life=2500, phrased=0.6, big_lone=0.4,
                first_image=FIRST.steps * FIRST.batch)
THIRD = Recipe(steps=4000, lr=3e-4, warmup=100, half_life=2000, phrased=0.7, big_lone=0.4, position_share=0.3,
               first_image=(FIRST.steps + SECOND.steps) * FIRST.batch)
STAGES = (FIRST, SECOND, THIRD)


def encode_sample(tokenizer, image_index: int, recipe: Recipe) -> tuple[list[int], list[int], "object"]:
    """One train-split image with ``recipe.turns`` independent questions: (ids, labels, image)."""
    ids, labels, image, *_ = encode_sample_with_scene(tokenizer, image_index, recipe)
    return ids, labels, image


def encode_sample_with_scene(tokenizer, image_index: int, recipe: Recipe):
    """(ids, labels, image, scene, first question): a training sample with what its probes need."""
    rng = scene_rng("train", recipe.first_image + image_index, recipe.seed)
    scene = random_scene(rng, recipe.big_lone)
    turns = [random_qa(scene, rng, recipe.phrased, recipe.position_share) for _ in range(recipe.turns)]
    ids, labels = encode_turns(tokenizer, turns)
    return ids, labels, render(scene), scene, turns[0]


def patch_cover(obj: Shape):
    """(patches,) bool: the patches at least 3 % covered by ``obj`` (row-major, as the vision tower orders them)."""
    import numpy as np

    grid = IMAGE_SIZE // PATCH_SIZE
    side = PATCH_SIZE * SUPERSAMPLE
    cover = np.asarray(mask(obj), dtype=np.float32).reshape(grid, side, grid, side).mean(axis=(1, 3)) / 255
    return cover.reshape(-1) >= 0.03


def patch_targets(scene: Scene):
    """(patches, colors x shapes) multi-hot: which (color, shape) covers each patch (probe on the projector output)."""
    import numpy as np

    target = np.zeros((IMAGE_TOKENS, len(COLORS) * len(SHAPES)), dtype=np.float32)
    for obj in scene.objects:
        target[:, list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)] = patch_cover(obj)
    return target


def evidence_targets(qa: QA):
    """(patches,) 0/1: the patches of the object that makes a yes/no answer Yes, or that an open question
    asks about; all 0 for a No answer. Count questions have none (:func:`has_evidence`)."""
    import numpy as np

    if qa.evidence is None:
        return np.zeros(IMAGE_TOKENS, dtype=np.float32)
    return patch_cover(qa.evidence).astype(np.float32)


def has_evidence(qa: QA) -> bool:
    """Whether the evidence probe is trained on this question: counting has no single object to point at."""
    return qa.category not in ("count", "open_count")


def encode_turns(tokenizer, turns: list[QA]) -> tuple[list[int], list[int]]:
    """Token ids of the chat-template conversation and labels that are -100 except on answers + EOS.

    Built segment by segment, split where the byte-level pre-tokenizer splits anyway (before "\\n",
    after ":", before an answer's leading space), so the concatenation equals tokenizing the rendered
    chat template (tests/test_demo_model.py checks this).
    """
    ids: list[int] = []
    labels: list[int] = []
    for turn, qa in enumerate(turns):
        image = "\n" + IMAGE * IMAGE_TOKENS if turn == 0 else ""
        prompt = _encode(tokenizer, ("USER: " if turn == 0 else "\nUSER: ") + qa.question + image + "\nASSISTANT:")
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
    of any longer run (a snapshot of a long run is a shorter run's result).
    """
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    return recipe.lr * 0.5 ** ((step - recipe.warmup) / recipe.half_life)


class StepBatches:
    """Step ``i``'s batch, tensors ready (a map-style dataset for torch's DataLoader).

    Each batch is a function of the step alone, so drawing and rendering in a worker process while the
    main process trains changes nothing but the speed (about a quarter of a step is drawing scenes).
    """

    def __init__(self, tokenizer, recipe: Recipe):
        self.tokenizer, self.recipe = tokenizer, recipe

    def __len__(self) -> int:
        return self.recipe.steps

    def __getitem__(self, step: int) -> dict:
        import numpy as np
        import torch

        recipe = self.recipe
        samples = [encode_sample_with_scene(self.tokenizer, step * recipe.batch + k, recipe)
                   for k in range(recipe.batch)]
        batch = collate(self.tokenizer, [sample[:3] for sample in samples])
        batch["patch_targets"] = torch.from_numpy(np.stack([patch_targets(sample[3]) for sample in samples]))
        batch["evidence"] = torch.from_numpy(np.stack([evidence_targets(sample[4]) for sample in samples]))
        batch["pointed"] = torch.tensor([has_evidence(sample[4]) for sample in samples])
        return batch


def batches(tokenizer, recipe: Recipe, workers: int):
    """The steps' batches in order; ``workers`` = 0 draws them in this process."""
    import torch

    data = StepBatches(tokenizer, recipe)
    if workers == 0:
        return (data[step] for step in range(recipe.steps))
    return iter(torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=workers,
                                            prefetch_factor=8, generator=torch.Generator().manual_seed(0)))


def train_demo(out: Path, seed: int = 0, snapshots: Path | None = None) -> Path:
    """The shipped recipe: every stage of :data:`STAGES`, each continuing from the one before, into ``out``."""
    import tempfile

    check_not_shipped(out)
    previous = None
    with tempfile.TemporaryDirectory(prefix=".demo-stages.", dir=Path(out).resolve().parent) as tmp:
        for k, stage in enumerate(STAGES):
            target = Path(out) if k == len(STAGES) - 1 else Path(tmp) / f"stage{k + 1}"
            print(f"stage {k + 1}/{len(STAGES)}: {stage.steps} steps", flush=True)
            train(target, replace(stage, seed=seed), snapshots=snapshots and snapshots / f"stage{k + 1}", init=previous)
            previous = target
    return Path(out)


def train_stages(out: Path, seed: int = 0, snapshots: Path | None = None, stage: int | None = None,
                 init: Path | None = None, steps: int | None = None) -> Path:
    """``vlmkit demo train`` and ``python -m vlmkit.demo.train``: the whole recipe, or one stage of it."""
    from vlmkit.errors import VlmkitError

    if stage is None:
        if init is not None or steps is not None:
            raise VlmkitError(None, "--init and --steps go with --stage (the full recipe fixes both)")
        return train_demo(out, seed, snapshots)
    if stage not in range(1, len(STAGES) + 1) or (stage > 1) != (init is not None):
        raise VlmkitError(None, f"--stage must be 1 (no --init) or 2..{len(STAGES)} (with --init: the stage "
                                "before's output)")
    recipe = replace(STAGES[stage - 1], seed=seed)
    return train(out, replace(recipe, steps=steps) if steps else recipe, snapshots=snapshots, init=init)


def train(out: Path, recipe: Recipe = FIRST, log_every: int = 50, snapshots: Path | None = None,
          workers: int = 1, init: Path | None = None) -> Path:
    """Train one stage into ``out``, which must not be the shipped weights (compare against them instead).

    ``init``: continue from that saved model and its tokenizer (fresh optimizer and probes) instead of from scratch.
    """
    check_not_shipped(out)
    import torch
    from transformers import LlavaForConditionalGeneration

    from vlmkit.demo.model import build_config, build_processor, save, train_tokenizer

    torch.set_num_threads(THREADS)
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    if init is None:
        tokenizer = train_tokenizer(recipe.seed)
        processor = build_processor(tokenizer)
        model = LlavaForConditionalGeneration(build_config(tokenizer))
    else:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(init)
        tokenizer = processor.tokenizer
        model = LlavaForConditionalGeneration.from_pretrained(init, dtype=torch.float32)
    model.train()
    probe = torch.nn.Linear(model.config.text_config.hidden_size, len(COLORS) * len(SHAPES))
    evidence_probe = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    image_token = model.config.image_token_index
    projected = {}
    model.model.multi_modal_projector.register_forward_hook(lambda m, i, out: projected.update(out=out))
    optimizer = torch.optim.AdamW([*model.parameters(), *probe.parameters(), *evidence_probe.parameters()],
                                  lr=recipe.lr, betas=(0.9, 0.98), weight_decay=recipe.weight_decay)
    start, running, running_evidence = time.time(), 0.0, 0.0
    for step, batch in enumerate(batches(tokenizer, recipe, workers)):
        targets, evidence, pointed = batch.pop("patch_targets"), batch.pop("evidence"), batch.pop("pointed")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 matmuls (AMX where present), fp32 weights
            result = model(**batch, output_hidden_states=True)
            answer_loss = result.loss
            states = result.hidden_states[recipe.evidence_layer][batch["input_ids"] == image_token]
            guess = evidence_probe(states.float()).view(len(pointed), -1)
            evidence_loss = torch.nn.functional.binary_cross_entropy_with_logits(guess[pointed], evidence[pointed])
            features = torch.nn.functional.normalize(projected["out"].float(), dim=-1) * 16  # scale-free probe
            aux = torch.nn.functional.binary_cross_entropy_with_logits(probe(features), targets)
        loss = answer_loss + recipe.aux_weight * aux + recipe.evidence_weight * evidence_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running, running_evidence = running + answer_loss.item(), running_evidence + evidence_loss.item()
        if (step + 1) % log_every == 0:
            print(f"step {step + 1}/{recipe.steps} loss {running / log_every:.4f} "
                  f"evidence {running_evidence / log_every:.4f} lr {lr_at(step, recipe):.2e} {time.time() - start:.0f}s",
                  flush=True)
            running, running_evidence = 0.0, 0.0
        if snapshots is not None and (step + 1) % 1000 == 0:  # for watching a run; does not touch its RNGs
            save(model, processor, snapshots / f"step{step + 1}")
    model.eval()
    save(model, processor, out)
    return out


def check_not_shipped(out: Path) -> None:
    """The shipped weights are what the README's tables were measured on: a retrain goes elsewhere."""
    from vlmkit.errors import VlmkitError
    from vlmkit.hub import demo_path

    if Path(out).resolve() == demo_path():
        raise VlmkitError(out, "refusing to overwrite the shipped demo weights; train into another --out "
                               "directory and compare")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new output directory (never the shipped weights)")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--stage", type=int, choices=range(1, len(STAGES) + 1), default=None,
                        help="run one stage only (a later stage needs --init: the stage before's output)")
    parser.add_argument("--init", type=Path, default=None, help="with --stage: continue from this model")
    parser.add_argument("--steps", type=int, default=None, help="with --stage: steps (default: the stage's)")
    parser.add_argument("--snapshots", type=Path, default=None, help="also save every 1,000 steps under this dir")
    args = parser.parse_args(argv)
    from vlmkit.errors import VlmkitError

    try:
        train_stages(args.out, args.seed, args.snapshots, args.stage, args.init, args.steps)
    except VlmkitError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
