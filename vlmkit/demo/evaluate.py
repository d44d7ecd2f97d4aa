"""Ask the demo model (or any LLaVA-style HF model) the questions of a VQA set and score them.

Greedy answers through transformers' ``generate``, batched with left padding; scoring is
:mod:`vlmkit.metrics.mme`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlmkit.metrics.mme import Prediction, score


@dataclass(frozen=True)
class Question:
    image: Image.Image
    question: str
    answer: str
    category: str
    question_id: str
    lang: str = ""


def load(model: str | os.PathLike = "demo", threads: int | None = None):
    """(model, processor) in fp32 eval mode; transformers' progress bars and warnings kept quiet."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from transformers.utils import logging

    from vlmkit.hub import resolve_model

    if threads:
        torch.set_num_threads(threads)
    path = resolve_model(model)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    net = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32).eval()
    return net, processor


def prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def answer(net, processor, images: list[Image.Image], questions: list[str], batch_size: int = 50,
           max_new_tokens: int = 8) -> list[str]:
    import torch

    out: list[str] = []
    for start in range(0, len(questions), batch_size):
        texts = [prompt(processor, q) for q in questions[start:start + batch_size]]
        inputs = processor(images=images[start:start + batch_size], text=texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ids = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = ids[:, inputs["input_ids"].shape[1]:]
        out += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
    return out


def split_questions(split: str = "test", n: int | None = None, seed: int = 0) -> list[Question]:
    from vlmkit.demo.dataset import TEST_IMAGES, make_split, records

    rows = records(make_split(split, n or TEST_IMAGES, seed))
    questions, image = [], None
    for row, img in rows:
        image = img if img is not None else image
        questions.append(Question(image, row["question"], row["answer"], row["category"], row["question_id"], row["lang"]))
    return questions


def set_questions(path: str | os.PathLike) -> list[Question]:
    """Questions of any set in the :mod:`vlmkit.data.vqa` format (images opened once each)."""
    from vlmkit.data import load_vqa

    images: dict[Path, Image.Image] = {}
    questions = []
    for rec in load_vqa(path):
        if rec.image not in images:
            images[rec.image] = Image.open(rec.image).convert("RGB")
        questions.append(Question(images[rec.image], rec.question, rec.answer, rec.category, rec.question_id, rec.lang))
    return questions


def answer_with_runner(model: str | os.PathLike, images: list[Image.Image], questions: list[str],
                       backend: str = "auto", max_new_tokens: int = 8) -> list[str]:
    """Greedy answers one question at a time through :func:`vlmkit.load` (any backend, e.g. a GGUF on
    llama.cpp), the same chat template and image placement as ``vlmkit run``."""
    from vlmkit.api import load as load_runner

    runner = load_runner(model, backend=backend)
    try:
        return [runner.generate(q, images=[img], max_new_tokens=max_new_tokens).text.strip()
                for img, q in zip(images, questions)]
    finally:
        runner.close()


def evaluate(questions: list[Question], model: str | os.PathLike = "demo", net=None, processor=None,
             backend: str = "transformers") -> dict:
    """Scores (see :func:`vlmkit.metrics.mme.score`) plus per-language accuracy and every prediction.

    ``backend="transformers"`` batches through ``generate``; any other backend (``llamacpp``, ``auto``
    for a GGUF directory) answers through :func:`vlmkit.load`."""
    images, texts = [q.image for q in questions], [q.question for q in questions]
    if backend != "transformers":
        said = answer_with_runner(model, images, texts, backend)
    else:
        if net is None:
            net, processor = load(model)
        said = answer(net, processor, images, texts)
    preds = [Prediction(q.question_id, q.category, q.answer, s) for q, s in zip(questions, said)]
    result = score(preds)
    result["by_lang"] = _by_lang(questions, preds)
    result["predictions"] = [
        {"question_id": q.question_id, "category": q.category, "lang": q.lang, "question": q.question,
         "answer": q.answer, "prediction": p.prediction, "correct": p.correct}
        for q, p in zip(questions, preds)
    ]
    return result


SCORE_COLUMNS = ("category", "questions", "acc", "acc+", "score", "acc en", "acc ja")


def score_rows(result: dict) -> list[tuple[str, ...]]:
    """The score table's rows, MME's yes/no categories first, then the total (columns: SCORE_COLUMNS)."""
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = []
    for c in sorted(result["categories"], key=lambda c: c["kind"] != "yes/no"):
        langs = result["by_lang"].get(c["category"], {})
        rows.append((c["category"], str(c["questions"]), f"{c['acc']:.2f}", num(c["acc_plus"]), num(c["score"]),
                     num(langs.get("en")), num(langs.get("ja"))))
    rows.append(("total (yes/no)", "", "", "", f"{result['total']:.2f} / {result['total_max']}", "", ""))
    return rows


def markdown_table(result: dict) -> str:
    """The README's score table (``vlmkit demo score --markdown``)."""
    *categories, total = score_rows(result)
    lines = ["| " + " | ".join(SCORE_COLUMNS) + " |", "|---|" + "--:|" * (len(SCORE_COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in categories]
    lines.append(f"| **{total[0]}** | | | | **{total[4]}** | | |")
    return "\n".join(lines)


def _by_lang(questions: list[Question], preds: list[Prediction]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, list[bool]]] = {}
    for q, p in zip(questions, preds):
        table.setdefault(q.category, {}).setdefault(q.lang or "-", []).append(p.correct)
    return {cat: {lang: 100.0 * sum(v) / len(v) for lang, v in langs.items()} for cat, langs in table.items()}
