"""``vlmkit eval vqa``: ask a model the questions of a VQA set, score them MME's way, compare two runs.

Answers are greedy (8 new tokens at most). The transformers backend answers in left-padded batches through
``generate`` (the README's demo table); other backends one question at a time through ``vlmkit.load``, the
prompt and image placement of ``vlmkit run``. Scoring is :mod:`vlmkit.metrics.mme`; ``--against`` pairs the
answers with another run's jsonl and tests the difference with the exact McNemar test
(:mod:`vlmkit.metrics.paired`). Answers go to ``OUT.partial`` as they come (one json line each, so an
interrupted run resumes from it) and the finished file is renamed to ``OUT``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmkit.demo.dataset import LARGE_TEST_IMAGES, TEST_IMAGES
from vlmkit.errors import VlmkitError
from vlmkit.metrics.mme import Prediction, score

MAX_NEW_TOKENS = 8
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


@dataclass(frozen=True)
class Question:
    image: Image.Image
    question: str
    answer: str
    category: str
    question_id: str
    lang: str = ""

    @property
    def key(self) -> str:
        """Identifies the question in an answers jsonl (the two questions of an MME pair share an id)."""
        return f"{self.question_id}\t{self.question}"


# --- questions -----------------------------------------------------------------------------------------

# name -> (benchmark phrasing, test-split images): the demo's test split asked plainly / the benchmarks' way, and
# ten times larger. 600 questions score one lost yes/no pair as 3 points, so they cannot tell a 2-point
# difference from one near-tied question; 6,000 (whose first 600 are ``demo``) put one answer at ~0.3 points.
DEMO_SETS = {"demo": (False, TEST_IMAGES), "demo-mme": (True, TEST_IMAGES), "demo-large": (False, LARGE_TEST_IMAGES)}


def split_questions(split: str = "test", n: int | None = None, seed: int = 0,
                    benchmark_phrasing: bool = False) -> list[Question]:
    from vlmkit.demo.dataset import TEST_IMAGES, make_split, records

    rows = records(make_split(split, n or TEST_IMAGES, seed), benchmark_phrasing)
    questions, image = [], None
    for row, img in rows:
        image = img if img is not None else image
        questions.append(Question(image, row["question"], row["answer"], row["category"], row["question_id"],
                                  row["lang"]))
    return questions


def set_questions(path: str | os.PathLike) -> list[Question]:
    """Questions of any set in the :mod:`vlmkit.data.vqa` format (images opened once each)."""
    from vlmkit.data import load_vqa
    from vlmkit.runtime.prompt import load_image

    images: dict[Path, Image.Image] = {}
    questions = []
    for rec in load_vqa(path):
        if rec.image not in images:
            images[rec.image] = load_image(rec.image)
        questions.append(Question(images[rec.image], rec.question, rec.answer, rec.category, rec.question_id,
                                  rec.lang))
    return questions


def load_questions(data: str | os.PathLike = "demo", limit: int | None = None) -> list[Question]:
    """``demo`` (the demo's test split, 600 questions), ``demo-mme`` (the same ending in MME's "Please answer yes
    or no." / the short-answer request), ``demo-large`` (the test split at 2,000 images: 6,000 questions, the first
    600 of them ``demo``'s) or a questions.jsonl / its directory."""
    if str(data) in DEMO_SETS:
        phrasing, images = DEMO_SETS[str(data)]
        questions = split_questions("test", images, benchmark_phrasing=phrasing)
    else:
        questions = set_questions(data)
    return questions[:limit] if limit else questions


# --- answering ------------------------------------------------------------------------------------------

def load(model: str | os.PathLike = "demo", threads: int | None = None):
    """(model, processor) in fp32 eval mode, left padding for batches; transformers kept quiet."""
    from vlmkit.hub import resolve_model
    from vlmkit.runtime.transformers_backend import TransformersBackend

    backend = TransformersBackend(resolve_model(model), device="cpu", dtype="f32", threads=threads)
    backend.processor.tokenizer.padding_side = "left"
    return backend.model, backend.processor


def prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def answer(net, processor, images: list[Image.Image], questions: list[str], batch_size: int = 50,
           max_new_tokens: int = MAX_NEW_TOKENS, on_batch: Callable[[list[str]], None] | None = None) -> list[str]:
    """Greedy answers through transformers' ``generate`` in left-padded batches."""
    import torch

    out: list[str] = []
    for start in range(0, len(questions), batch_size):
        texts = [prompt(processor, q) for q in questions[start:start + batch_size]]
        inputs = processor(images=images[start:start + batch_size], text=texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ids = net.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = ids[:, inputs["input_ids"].shape[1]:]
        said = [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
        out += said
        if on_batch:
            on_batch(said)
    return out


def answer_with_runner(runner, images: list[Image.Image], questions: list[str],
                       max_new_tokens: int = MAX_NEW_TOKENS,
                       on_batch: Callable[[list[str]], None] | None = None) -> list[str]:
    """Greedy answers one question at a time through a :class:`vlmkit.api.Runner` (any backend)."""
    out = []
    for image, question in zip(images, questions):
        out.append(runner.generate(question, images=[image], max_new_tokens=max_new_tokens).text.strip())
        if on_batch:
            on_batch(out[-1:])
    return out


def _answers(runner: Any, questions: list[Question], on_batch: Callable[[list[str]], None] | None,
             batch_size: int = 50) -> list[str]:
    """Greedy answers from a loaded :class:`vlmkit.api.Runner`: batched on transformers and vLLM, else one by one."""
    images, texts = [q.image for q in questions], [q.question for q in questions]
    if runner.name == "transformers" and batch_size > 1:
        net, processor = runner.backend.model, runner.backend.processor
        processor.tokenizer.padding_side = "left"
        return answer(net, processor, images, texts, batch_size, on_batch=on_batch)
    if hasattr(runner.backend, "generate_batch") and batch_size > 1:  # vLLM: one engine batch per chunk
        out: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = runner.generate_batch(texts[start:start + batch_size],
                                          [[image] for image in images[start:start + batch_size]],
                                          max_new_tokens=MAX_NEW_TOKENS)
            out += [result.text.strip() for result in chunk]
            if on_batch:
                on_batch(out[start:])
        return out
    return answer_with_runner(runner, images, texts, on_batch=on_batch)


def evaluate(questions: list[Question], model: str | os.PathLike = "demo", net=None, processor=None,
             backend: str = "transformers") -> dict:
    """Scores (see :func:`vlmkit.metrics.mme.score`) plus per-language accuracy and every prediction.

    ``net`` / ``processor``: an already loaded transformers model to answer with (batched);
    ``backend="transformers"`` answers in batches, any other (``auto``, ``llamacpp``) one at a time."""
    if net is not None:
        said = answer(net, processor, [q.image for q in questions], [q.question for q in questions])
    else:
        from vlmkit.api import load as load_runner

        with load_runner(model, backend=backend) as runner:
            said = _answers(runner, questions, None, 50 if backend in ("transformers", "vllm") else 1)
    return scored(questions, said)


def scored(questions: list[Question], said: list[str]) -> dict:
    preds = [Prediction(q.question_id, q.category, q.answer, s) for q, s in zip(questions, said)]
    result = score(preds)
    result["by_lang"] = _by_lang(questions, preds)
    result.update(_mme_sums(result["categories"]))
    result["predictions"] = [
        {"question_id": q.question_id, "category": q.category, "lang": q.lang, "question": q.question,
         "answer": q.answer, "prediction": p.prediction, "correct": p.correct}
        for q, p in zip(questions, preds)
    ]
    return result


def _mme_sums(categories: list[dict]) -> dict[str, float]:
    """MME's perception (out of 2000) and cognition (out of 800) sums, when the categories are MME's."""
    scores = {c["category"]: c["score"] for c in categories if c["score"] is not None}
    out = {}
    for name, members in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        if set(members) <= set(scores):
            out[name] = sum(scores[m] for m in members)
    return out


# --- the eval vqa verb: resumable, with progress, calibration overlap and a paired test -----------------

def run_vqa(model: str | os.PathLike, data: str | os.PathLike = "demo", backend: str = "auto",
            limit: int | None = None, out: str | os.PathLike | None = None,
            against: str | os.PathLike | None = None, threads: int | None = None, progress: bool = True,
            batch_size: int = 50, verbose: bool = False, download: bool = False) -> dict:
    """Answer and score ``data`` with ``model``; see the module docstring."""
    from vlmkit.api import load as load_runner
    from vlmkit.data.calibration import overlap
    from vlmkit.hub import resolve_model

    questions = load_questions(data, limit)
    path = resolve_model(model, download=download)
    done = _resume(Path(out)) if out else {}
    todo = [q for q in questions if q.key not in done]
    runner = load_runner(path, backend=backend, threads=threads, verbose=verbose) if todo else None
    try:  # the model is open (or refused in one line) before the progress bar starts
        with _Journal(Path(out) if out else None, todo) as journal, \
                _progress(len(questions), len(done), progress) as bar:
            def on_batch(said: list[str]) -> None:
                journal.write(said)
                bar.update(len(said))

            if todo:
                fresh = _answers(runner, todo, on_batch, batch_size)
                done.update({q.key: s for q, s in zip(todo, fresh)})
    finally:
        if runner is not None:
            runner.close()
    result = scored(questions, [done[q.key] for q in questions])
    result.update(model=str(model), data=str(data), backend=backend, resumed=len(questions) - len(todo))
    result["calibration_overlap"] = overlap(path, [(q.image, q.question) for q in questions])
    if against is not None:
        result["against"] = compare_runs(result["predictions"], read_answers(Path(against)))
    return result


def _resume(out: Path) -> dict[str, str]:
    """Answers already given: the finished ``out`` or the ``out.partial`` an interrupted run left."""
    for path in (out, _partial(out)):
        if path.is_file():
            return {f"{row['question_id']}\t{row['question']}": row["prediction"] for row in read_answers(path)}
    return {}


def _partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def read_answers(path: Path) -> list[dict]:
    """The rows of an answers jsonl (a torn last line of an interrupted run is dropped)."""
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise VlmkitError(path, f"cannot read answers: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise VlmkitError(f"{path}:{number}", "not valid JSON") from None
        if not isinstance(row, dict) or not {"question_id", "question", "prediction"} <= set(row):
            raise VlmkitError(f"{path}:{number}", "not an answers line (question_id, question, prediction)")
        rows.append(row)
    return rows


class _Journal:
    """Appends answers to ``OUT.partial`` as they come; renames it to ``OUT`` when all are in."""

    def __init__(self, out: Path | None, todo: list[Question]):
        self.out, self.todo, self.index, self.handle = out, todo, 0, None

    def __enter__(self) -> _Journal:
        if self.out is not None:
            partial = _partial(self.out)
            if self.out.is_file() and not partial.exists():
                os.replace(self.out, partial)  # the finished file grows: continue it as a partial one
            self.out.parent.mkdir(parents=True, exist_ok=True)
            _drop_torn_line(partial)
            self.handle = open(partial, "a", encoding="utf-8")
        return self

    def write(self, said: Iterable[str]) -> None:
        for text in said:
            q = self.todo[self.index]
            self.index += 1
            if self.handle is not None:
                row = {"question_id": q.question_id, "category": q.category, "lang": q.lang,
                       "question": q.question, "answer": q.answer, "prediction": text}
                self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.handle is not None:
            self.handle.flush()

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self.handle is None:
            return
        self.handle.close()
        if kind is None:
            os.replace(_partial(self.out), self.out)


def _drop_torn_line(path: Path) -> None:
    """Cut an interrupted run's half-written last line, so appended answers start on a line of their own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: tqdm's own rule, no bar when stderr is not a terminal (logs, pipes)
    return tqdm(total=total, initial=done, unit="q", desc="answering", disable=None if enabled else True,
                leave=False, dynamic_ncols=True)


def compare_runs(predictions: list[dict], other: list[dict]) -> dict:
    """This run vs another run's answers on the questions both have: changed answers and McNemar."""
    from vlmkit.metrics.mme import Prediction as Pred
    from vlmkit.metrics.paired import exact_mcnemar

    theirs = {f"{r['question_id']}\t{r['question']}": r for r in other}
    pairs = [(p, theirs[k]) for p in predictions if (k := f"{p['question_id']}\t{p['question']}") in theirs]
    if not pairs:
        raise VlmkitError(None, "--against: the two runs share no question (question_id + question)")

    def right(row: dict, prediction: str) -> bool:
        return Pred(row["question_id"], row["category"], row["answer"], prediction).correct

    mine = [p["correct"] for p, _ in pairs]
    before = [right(p, o["prediction"]) for p, o in pairs]
    changed = [{"question_id": p["question_id"], "question": p["question"], "answer": p["answer"],
                "before": o["prediction"], "after": p["prediction"], "right_before": b, "right_after": a}
               for (p, o), b, a in zip(pairs, before, mine) if o["prediction"] != p["prediction"]]
    test = exact_mcnemar(before, mine)
    return {"paired_questions": len(pairs), "changed": changed, "mcnemar": test.as_dict()}


# --- tables -----------------------------------------------------------------------------------------------

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
    """The README's score table (``vlmkit eval vqa demo --markdown``)."""
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
