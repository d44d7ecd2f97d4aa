"""``vlmkit eval compare REF CAND``: two models' next-token distributions on the same token ids.

Text follows ``llama-perplexity --kl-divergence`` exactly, so the numbers are comparable with it on the same
GGUF pair and text: the reference's tokenizer tokenizes the whole text (BOS added when the tokenizer adds
one), the tokens are cut into ``ctx``-token chunks (the first token of each replaced by BOS when the
tokenizer adds one), each chunk is evaluated from an empty cache, and the logits of the second half of each
chunk (positions ctx/2 .. ctx-2) are scored against the next token. Image sets (``demo`` or a questions.jsonl)
are scored over the tokens of each true answer after its image + question prompt, and the two vision towers'
outputs are compared (cosine, max |diff|) when both sides have one. Statistics: :mod:`vlmkit.metrics.kld`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.metrics.kld import KldSummary, TokenStats, kld_by_position, summarize, token_stats

DEFAULT_CTX = 512
N_EMBEDDING_IMAGES = 8  # distinct images whose tower outputs are compared


@dataclass
class CompareResult:
    ref: str
    cand: str
    data: str
    ctx: int | None
    summary: KldSummary
    stats: TokenStats = field(repr=False)
    tokenizer: dict[str, Any] | None = None
    image_embeddings: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    quantization: dict[str, Any] | None = None  # the candidate's vlmkit_quantization.json, when it has one

    def as_dict(self) -> dict[str, Any]:
        positions, means = kld_by_position(self.stats)
        return {"ref": self.ref, "cand": self.cand, "data": self.data, "ctx": self.ctx,
                "summary": self.summary.as_dict(), "tokenizer": self.tokenizer,
                "image_embeddings": self.image_embeddings, "notes": self.notes, "quantization": self.quantization,
                "kld_by_position": {"position": positions.tolist(), "mean_kld": means.tolist()}}


# --- data -------------------------------------------------------------------------------------------------

def builtin_text() -> str:
    """The text ``--data corpus`` scores: the zoo's English + Japanese corpus (written for this project)."""
    from vlmkit.gguf.corpus import TOKENIZER_CORPUS
    from vlmkit.zoo.corpus import ENGLISH, JAPANESE

    return "\n".join([*ENGLISH, *JAPANESE, *TOKENIZER_CORPUS])


def is_image_source(data: str | os.PathLike) -> bool:
    from vlmkit.eval.vqa import DEMO_SETS

    path = Path(data)
    return str(data) in DEMO_SETS or path.is_dir() or path.suffix == ".jsonl"


def read_text(data: str | os.PathLike) -> str:
    if str(data) == "corpus":
        return builtin_text()
    try:
        return Path(data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VlmkitError(data, f"cannot read the text: {getattr(error, 'strerror', None) or error}") from None


# --- text: llama-perplexity's chunks ----------------------------------------------------------------------

def chunks(tokens: list[int], ctx: int, bos: int | None) -> Iterator[list[int]]:
    """llama-perplexity's chunks: ``len(tokens) // ctx`` windows, the first token of each set to BOS."""
    if len(tokens) < 2 * ctx:
        raise VlmkitError(None, f"the text is {len(tokens)} tokens; --ctx {ctx} needs at least {2 * ctx} "
                                f"(llama-perplexity's rule): give a longer text or a smaller --ctx")
    for start in range(0, len(tokens) // ctx * ctx, ctx):
        chunk = tokens[start:start + ctx]
        if bos is not None:
            chunk[0] = bos
        yield chunk


def scored_half(ctx: int) -> slice:
    """Rows of a chunk's logits that are scored: positions ctx/2 .. ctx-2 (each predicts the next token)."""
    return slice(ctx // 2, ctx - 1)


def _pair(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if ref.shape != cand.shape:
        raise UnsupportedError(None, f"the two models' logits differ in shape ({list(ref.shape)} vs "
                                     f"{list(cand.shape)}): not the same vocabulary")
    return ref, cand


def compare_text(ref: Any, cand: Any, text: str, ctx: int = DEFAULT_CTX, progress: bool = False) -> TokenStats:
    tokens = ref.tokenize(text, True)
    rows, parts = scored_half(ctx), []
    all_chunks = list(chunks(tokens, ctx, ref.bos_to_add()))
    for chunk in _bar(all_chunks, progress, "chunks"):
        a, b = _pair(ref.logits(chunk), cand.logits(chunk))
        parts.append(token_stats(a[rows], b[rows], np.array(chunk[rows.start + 1:ctx]),
                                 np.arange(rows.start, rows.stop)))
    return TokenStats.join(parts)


# --- images: answer tokens after an image + question prompt ------------------------------------------------

def answer_ids(backend: Any, question: str, images: list[Any], answer: str) -> tuple[list[int], list[int], slice]:
    """(ids, answer_ids, rows): one user turn (the images, then the question) with the generation prompt as
    ``vlmkit run`` builds it, followed by the answer's tokens; ``rows`` selects the rows of
    ``backend.logits(ids, images)`` that predict the answer tokens (row i predicts text entry i + 1)."""
    from vlmkit.runtime.base import IMAGE
    from vlmkit.runtime.prompt import user_message, uses_typed_content

    typed = uses_typed_content(backend.chat_template())
    prompt = backend.encode([user_message(question, len(images), typed, backend.image_placeholder)], images)
    tokens = backend.tokenize(answer, False)
    ids = prompt + tokens
    n_text = len(ids) - ids.count(IMAGE)
    return ids, tokens, slice(n_text - len(tokens) - 1, n_text - 1)


def compare_images(ref: Any, cand: Any, questions: list[Any], progress: bool = False) -> TokenStats:
    parts = []
    for q in _bar(questions, progress, "questions"):
        ids, answer, rows = answer_ids(ref, q.question, [q.image], q.answer)
        a, b = _pair(ref.logits(ids, [q.image]), cand.logits(ids, [q.image]))
        parts.append(token_stats(a[rows], b[rows], np.array(answer), np.arange(len(answer))))
    return TokenStats.join(parts)


def image_embedding_agreement(ref: Any, cand: Any, images: list[Any]) -> dict[str, Any] | None:
    """Cosine (all rows flattened), worst row cosine and max |diff| of the two towers' outputs."""
    if not all(hasattr(side, "image_embeddings") for side in (ref, cand)):
        return None
    worst: dict[str, Any] = {"images": 0, "cosine": 1.0, "min_row_cosine": 1.0, "max_abs_diff": 0.0}
    for image in images[:N_EMBEDDING_IMAGES]:
        a, b = np.asarray(ref.image_embeddings(image), np.float64), np.asarray(cand.image_embeddings(image), np.float64)
        if a.shape != b.shape:
            return {"shapes": [list(a.shape), list(b.shape)], "note": "different image-row counts"}
        rows = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst["cosine"] = min(worst["cosine"], float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))))
        worst["min_row_cosine"] = min(worst["min_row_cosine"], float(rows.min()))
        worst["max_abs_diff"] = max(worst["max_abs_diff"], float(np.abs(a - b).max()))
        worst["ref_max_abs"] = max(worst.get("ref_max_abs", 0.0), float(np.abs(a).max()))
        worst["images"] += 1
    return worst


def _bar(items: list, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(items, unit=unit[:-1], desc="scoring", disable=None if enabled else True, leave=False,
                dynamic_ncols=True)


# --- the verb ---------------------------------------------------------------------------------------------

def open_model(model: str | os.PathLike, backend: str = "auto", threads: int | None = None,
               verbose: bool = False, download: bool = False) -> Any:
    """A loaded backend for MODEL (``vlmkit.load``'s resolution, validation and backend choice)."""
    from vlmkit.api import load

    return load(model, backend=backend, threads=threads, verbose=verbose, download=download).backend


def compare_backends(ref: Any, cand: Any, data: str | os.PathLike = "corpus", ctx: int = DEFAULT_CTX,
                     limit: int | None = None, progress: bool = False, names: tuple[str, str] = ("ref", "cand")
                     ) -> CompareResult:
    """:func:`compare` on two already loaded backends."""
    from vlmkit.eval.tokenizer_check import check_tokenizer
    from vlmkit.gguf.corpus import TOKENIZER_CORPUS

    quantization = quantization_record(cand)  # before the long part: a malformed record stops it at once
    tokenizer = check_tokenizer(ref, cand, TOKENIZER_CORPUS).as_dict()
    if is_image_source(data):
        from vlmkit.eval.vqa import load_questions

        questions = load_questions(data, limit)
        stats = compare_images(ref, cand, questions, progress)
        images = list({id(q.image): q.image for q in questions}.values())
        embeddings = image_embedding_agreement(ref, cand, images)
        result = CompareResult(*names, str(data), None, summarize(stats), stats, tokenizer, embeddings)
    else:
        stats = compare_text(ref, cand, read_text(data), ctx, progress)
        result = CompareResult(*names, str(data), ctx, summarize(stats), stats, tokenizer)
    result.notes += runtime_notes(ref, cand)
    result.quantization = quantization
    return result


def quantization_record(backend: Any) -> dict[str, Any] | None:
    """What ``vlmkit quantize`` recorded beside the backend's model (per-layer error ...), if it made it."""
    from vlmkit.quant.record import read_record

    path = getattr(backend, "path", None)
    return read_record(path) if path is not None else None


def compare(ref: str | os.PathLike, cand: str | os.PathLike, data: str | os.PathLike = "corpus",
            ctx: int = DEFAULT_CTX, limit: int | None = None, ref_backend: str = "auto", cand_backend: str = "auto",
            threads: int | None = None, progress: bool = False, verbose: bool = False,
            download: bool = False) -> CompareResult:
    """KL divergence and friends of CAND against REF on ``data`` (a text file, ``corpus``, ``demo`` or a VQA
    set); see the module docstring."""
    first = open_model(ref, ref_backend, threads, verbose, download)
    try:
        second = open_model(cand, cand_backend, threads, verbose, download)
        try:
            return compare_backends(first, second, data, ctx, limit, progress, (str(ref), str(cand)))
        finally:
            second.close()
    finally:
        first.close()


def runtime_notes(ref: Any, cand: Any) -> list[str]:
    """The runtime approximations that separate the two sides even when the weights are equal."""
    if {ref.name, cand.name} != {"transformers", "llamacpp"}:
        return []
    return ["llama.cpp side: f16 KV cache, flash attention as llama.cpp picks it; ggml's fp16 GELU table (GELU "
            "models, mmproj tower and projector), fp16 im2col of the patch convolution; mtmd's own image resize "
            "for images not at the tower's input size"]

