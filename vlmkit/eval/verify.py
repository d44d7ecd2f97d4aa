"""``vlmkit convert --verify``: the source model against its GGUF, through the backends ``vlmkit run`` uses.

An ``eval compare`` on a few prompts, plus what a conversion report needs on top: tokenizer agreement on an
English + Japanese corpus (differences checked against sentencepiece itself), greedy tokens (16 per prompt:
llama.cpp's through its ``generate_ids``; transformers' read off its teacher-forced logits on llama.cpp's
tokens, exact up to the first difference), teacher-forced logit statistics on llama.cpp's token sequence
(``Backend.logits``), and for a VLM with an mmproj the same with a test image plus the image-embedding parity
of :mod:`vlmkit.eval.image_parity`. The llama.cpp side is ``LlamaCppBackend``: its tokenizer handling,
chat-template-free raw prompts and mtmd image rows, f16 KV cache, exactly as run. The two sides run one after
the other and the transformers side is held as the machine's memory allows (:mod:`vlmkit.eval.reference`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    reference: dict[str, Any] | None = None      # how the transformers side was held (ReferencePlan.as_dict)

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


def greedy_from_logits(rows: np.ndarray, theirs: Sequence[int], eos: set[int], n: int) -> list[int]:
    """The reference's greedy tokens read off its teacher-forced logits on llama.cpp's tokens (``rows[i]``
    predicts token i): exactly what its own generation gives up to and including the first token where the
    two differ; after that the reference would continue from its own token, which these logits never see."""
    ours: list[int] = []
    for i, row in enumerate(rows[:n]):
        token = int(np.argmax(row))
        if token in eos:
            break
        ours.append(token)
        if i >= len(theirs) or token != theirs[i]:
            break
    return ours


@dataclass
class _Case:
    """One prompt of the check: the reference's prompt ids, llama.cpp's greedy tokens, its logits."""

    label: str
    prompt_ids: list[int]
    theirs: list[int]
    images: list[Any]
    cand: np.ndarray | None = None

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.theirs

    @property
    def first_generated_row(self) -> int:
        """Text row (``Backend.logits`` skips image places) of the last prompt token."""
        return len(self.prompt_ids) - 1 - self.prompt_ids.count(IMAGE)


def verify_conversion(model_dir: Path, gguf_path: Path, dtype: str, *, n_tokens: int = 16,
                      threads: int | None = None, verbose: bool = False, reference: Any = None) -> VerifyReport:
    """The parity report of ``gguf_path`` (and the mmproj.gguf beside it) against ``model_dir``.

    llama.cpp runs first (tokenizer, greedy tokens, teacher-forced logits) and is closed; then the reference
    (``vlmkit.eval.reference``: transformers at f32, whole or one block at a time as memory allows) scores the
    same token sequences in one pass. ``reference``: an open ``ReferenceBackend`` to use (kept open)."""
    from vlmkit.eval.reference import open_reference

    own = reference is None
    if own:
        reference = open_reference(reference_dir(model_dir), [gguf_path, gguf_path.with_name("mmproj.gguf")],
                                   threads, verbose)
    try:
        tokenizer, cases = _llama_side(model_dir, gguf_path, reference, n_tokens, threads, verbose)
        reference.load()
        refs = reference.logits_many([(case.ids, case.images) for case in cases])
        return _report(dtype, gguf_path, reference, tokenizer, cases, refs, n_tokens)
    finally:
        if own:
            reference.close()


def _llama_side(model_dir: Path, gguf_path: Path, hf: Any, n_tokens: int, threads: int | None,
                verbose: bool) -> tuple[TokenizerCheck, list[_Case]]:
    from vlmkit.gguf.corpus import TOKENIZER_CORPUS
    from vlmkit.gguf.tokenizer import tokenizer_dir
    from vlmkit.runtime.registry import open_backend

    try:
        ll = open_backend(gguf_path, "llamacpp", "cpu", None, threads, verbose)
    except UnsupportedError as error:  # our own output that llama.cpp refuses: a failed check, not a skipped one
        raise VlmkitError(error.path, error.reason) from None
    try:
        explain = SentencePieceReference.for_dir(tokenizer_dir(model_dir), hf.tokenizer)
        tokenizer = check_tokenizer(hf, ll, TOKENIZER_CORPUS, explain)
        cases = []
        for prompt in PROMPTS:
            ids = hf.tokenize(prompt, True)
            cases.append(_Case(prompt, ids, greedy(ll, ll.text_prompt(ids), n_tokens), []))
        if getattr(hf, "is_vlm", False) and ll.mtmd is not None:
            cases.append(_image_case(hf, ll, n_tokens))
        for case in cases:
            case.cand = ll.logits(case.ids, case.images)
        return tokenizer, cases
    finally:
        ll.close()


def _image_case(hf: Any, ll: Any, n_tokens: int) -> _Case:
    """A non-square photo (each side resizes it as the checkpoint's processor does) with a question."""
    from PIL import Image

    from vlmkit.eval.image_parity import verify_photo
    from vlmkit.runtime.prompt import user_message, uses_typed_content

    photo, pixels = verify_photo()
    image = Image.fromarray(pixels)

    def turn(backend: Any) -> list[dict]:  # string-content templates hold each backend's own image text
        return [user_message(QUESTION, 1, uses_typed_content(backend.chat_template()), backend.image_placeholder)]

    theirs = greedy(ll, ll.prepare(turn(ll), [image]), n_tokens)
    return _Case(photo, hf.encode(turn(hf), [image]), theirs, [image])


def _report(dtype: str, gguf_path: Path, hf: Any, tokenizer: TokenizerCheck, cases: list[_Case],
            refs: list[np.ndarray], n_tokens: int) -> VerifyReport:
    eos = hf.eos_ids()
    greedy_checks, image_greedy = [], None
    text_ref, text_cand = [], []
    for case, ref in zip(cases, refs):
        ours = greedy_from_logits(ref[case.first_generated_row:], case.theirs, eos, n_tokens)
        same, first_diff = sequence_agreement(ours, case.theirs)
        if case.images:
            after_image = case.ids.index(IMAGE)  # text rows from the image's place on
            stats = logit_stats(ref[after_image:], case.cand[after_image:])
            image_greedy = {"prompt": QUESTION, "image": case.label, "hf_tokens": ours, "gguf_tokens": case.theirs,
                            "n_same": same, "first_diff": first_diff, "teacher": stats.as_dict()}
        else:
            greedy_checks.append(GreedyCheck(case.label, ours, case.theirs, same, first_diff))
            text_ref.append(ref)
            text_cand.append(case.cand)
    report = VerifyReport(dtype, tokenizer, greedy_checks, logit_stats(np.concatenate(text_ref),
                                                                        np.concatenate(text_cand)))
    report.image_greedy = image_greedy
    report.reference = hf.plan.as_dict()
    note = hf.plan.note()
    if note:
        report.notes.append(note)
    _explain(report, gguf_path)
    return report


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
