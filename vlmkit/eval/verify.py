"""``vlmkit convert --verify``: the source model against its GGUF, through the backends ``vlmkit run`` uses.

An ``eval compare`` on a few prompts, plus what a conversion report needs on top: tokenizer agreement on an
English + Japanese corpus (differences checked against sentencepiece itself), greedy tokens of both sides
(16 per prompt, through each backend's ``generate_ids``), teacher-forced logit statistics on transformers'
token sequence (``Backend.logits``), and for a VLM with an mmproj the same with a test image plus the
image-embedding parity of :mod:`vlmkit.eval.image_parity`. The llama.cpp side is ``LlamaCppBackend``: its
tokenizer handling, chat-template-free raw prompts and mtmd image rows, f16 KV cache, exactly as run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.eval.tokenizer_check import SentencePieceReference, TokenizerCheck, check_tokenizer
from vlmkit.metrics.logits import LogitStats, logit_stats, sequence_agreement
from vlmkit.runtime.base import IMAGE, SamplingParams

PROMPTS = ("The color of the square is", "東京の天気は")
QUESTION = "What is in the picture?"
# teacher-forced thresholds under which a greedy-token difference is blamed on the runtime's own
# approximations (ggml's fp16 GELU table) rather than the conversion
MAX_MEAN_KLD = 1e-4
MIN_SAME_TOP1 = 0.999


@dataclass
class GreedyCheck:
    prompt: str
    hf_tokens: list[int]
    gguf_tokens: list[int]
    n_same: int
    first_diff: int | None


@dataclass
class VerifyReport:
    dtype: str
    tokenizer: TokenizerCheck
    greedy: list[GreedyCheck]
    teacher: LogitStats
    notes: list[str] = field(default_factory=list)
    image: dict[str, Any] | None = None          # image-embedding parity (mmproj side)
    image_greedy: dict[str, Any] | None = None   # greedy tokens / logits with the test image

    @property
    def greedy_identical(self) -> bool:
        return all(g.first_diff is None for g in self.greedy)

    @property
    def teacher_ok(self) -> bool:
        return self.teacher.mean_kld <= MAX_MEAN_KLD and self.teacher.same_top1 >= MIN_SAME_TOP1

    @property
    def ok(self) -> bool:
        """Parity holds: tokenizers agree and greedy tokens match (or the teacher-forced stats show that
        only a runtime approximation made them differ). Only meaningful for f32 output."""
        return self.tokenizer.unexplained == 0 and (self.greedy_identical or self.teacher_ok) and self.image_ok

    @property
    def image_ok(self) -> bool:
        g = self.image_greedy
        if not g or "skipped" in g:
            return True
        t = g["teacher"]
        return g["first_diff"] is None or (t["mean_kld"] <= MAX_MEAN_KLD and t["same_top1"] >= MIN_SAME_TOP1)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokenizer"] = self.tokenizer.as_dict()
        out.update(greedy_identical=self.greedy_identical, teacher_ok=self.teacher_ok, image_ok=self.image_ok,
                   ok=self.ok)
        return out


def reference_dir(model_dir: Path) -> Path:
    """The directory transformers loads as the reference: the model itself, or for a custom-code VLM
    that transformers cannot build (VILA-1.5's ``llava_llama``) its language model folder ``llm/``."""
    from transformers import CONFIG_MAPPING

    from vlmkit.families import family_for, text_dir

    config = json.loads((model_dir / "config.json").read_text())
    model_type, text = config.get("model_type"), text_dir(model_dir, family_for(config)[0])
    if model_type not in CONFIG_MAPPING and (text / "config.json").exists():
        return text
    if model_type not in CONFIG_MAPPING:
        raise UnsupportedError(model_dir, f"transformers cannot load model type {model_type!r} to verify against "
                                          "(use --no-verify)")
    return model_dir


def greedy(backend: Any, prompt: Any, n: int) -> list[int]:
    return list(backend.generate_ids(prompt, SamplingParams(max_new_tokens=n)))


def verify_conversion(model_dir: Path, gguf_path: Path, dtype: str, *, n_tokens: int = 16,
                      threads: int | None = None, verbose: bool = False) -> VerifyReport:
    """The parity report of ``gguf_path`` (and the mmproj.gguf beside it) against ``model_dir``."""
    from vlmkit.gguf.corpus import TOKENIZER_CORPUS
    from vlmkit.gguf.tokenizer import tokenizer_dir
    from vlmkit.runtime.registry import open_backend

    hf = open_backend(reference_dir(model_dir), "transformers", "cpu", "f32", threads, verbose)
    try:
        ll = open_backend(gguf_path, "llamacpp", "cpu", None, threads, verbose)
    except UnsupportedError as error:  # our own output that llama.cpp refuses: a failed check, not a skipped one
        hf.close()
        raise VlmkitError(error.path, error.reason) from None
    try:
        explain = SentencePieceReference.for_dir(tokenizer_dir(model_dir), hf.tokenizer)
        report = VerifyReport(dtype, check_tokenizer(hf, ll, TOKENIZER_CORPUS, explain), *_text(hf, ll, n_tokens))
        _explain(report, gguf_path)
        if getattr(hf, "is_vlm", False) and ll.mtmd is not None:
            report.image_greedy = with_image(hf, ll, n_tokens)
        return report
    finally:
        ll.close()
        hf.close()


def _text(hf: Any, ll: Any, n_tokens: int) -> tuple[list[GreedyCheck], LogitStats]:
    checks, sequences = [], []
    for prompt in PROMPTS:
        ids = hf.tokenize(prompt, True)
        ours, theirs = greedy(hf, hf.text_prompt(ids), n_tokens), greedy(ll, ll.text_prompt(ids), n_tokens)
        checks.append(GreedyCheck(prompt, ours, theirs, *sequence_agreement(ours, theirs)))
        sequences.append(ids + ours)
    ref = np.concatenate([hf.logits(s) for s in sequences])
    cand = np.concatenate([ll.logits(s) for s in sequences])
    return checks, logit_stats(ref, cand)


def with_image(hf: Any, ll: Any, n_tokens: int) -> dict[str, Any]:
    """Greedy tokens with a non-square photo (each side resizes it as the checkpoint's processor does), and
    teacher-forced logits from the image on."""
    from PIL import Image

    from vlmkit.eval.image_parity import verify_photo
    from vlmkit.runtime.prompt import user_message, uses_typed_content

    photo, pixels = verify_photo()
    image = Image.fromarray(pixels)

    def turn(backend: Any) -> list[dict]:  # string-content templates hold each backend's own image text
        return [user_message(QUESTION, 1, uses_typed_content(backend.chat_template()), backend.image_placeholder)]

    messages = turn(hf)
    ours = greedy(hf, hf.prepare(messages, [image]), n_tokens)
    theirs = greedy(ll, ll.prepare(turn(ll), [image]), n_tokens)
    ids = hf.encode(messages, [image]) + ours
    after_image = ids.index(IMAGE)  # text rows from the image's place on
    ref, cand = hf.logits(ids, [image])[after_image:], ll.logits(ids, [image])[after_image:]
    same, first_diff = sequence_agreement(ours, theirs)
    return {"prompt": QUESTION, "image": photo, "hf_tokens": ours, "gguf_tokens": theirs, "n_same": same,
            "first_diff": first_diff, "teacher": logit_stats(ref, cand).as_dict()}


def _explain(report: VerifyReport, gguf_path: Path) -> None:
    from vlmkit.families import family_for_gguf_arch

    if report.greedy_identical:
        return
    if report.teacher_ok:
        family = family_for_gguf_arch(_arch(gguf_path))
        cause = (family and family.gguf_runtime_note) or "a llama.cpp runtime approximation"
        report.notes.append(
            f"greedy tokens differ, but teacher-forced statistics (mean KLD {report.teacher.mean_kld:.2e} <= "
            f"{MAX_MEAN_KLD:g}, same top-1 {report.teacher.same_top1:.2%}) show the conversion is exact: "
            f"the difference comes from the runtime ({cause}), not the conversion")
    elif report.dtype == "f32":
        report.notes.append("greedy tokens differ and teacher-forced statistics exceed the thresholds: "
                            "the conversion is NOT exact")


def _arch(gguf_path: Path) -> str:
    import gguf

    field = gguf.GGUFReader(gguf_path).get_field("general.architecture")
    return str(field.contents()) if field is not None else ""
