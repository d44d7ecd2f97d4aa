"""MME scoring, as lmms-eval computes it, plus exact match for free-form categories.

Per yes/no category: acc = share of questions answered right, acc+ = share of images (question_id
groups) with both questions right, score = 100 * (acc + acc+), at most 200. The total is the sum of
category scores (MME's perception total is that sum over its 10 perception categories, out of 2000).
Predictions are parsed like lmms-eval's ``parse_pred_ans`` (lowercase, drop '.', "yes"/"no" in the
first four characters), extended to Japanese はい / いいえ. Hand-written because lmms-eval is a
large harness dependency for a dozen lines of arithmetic.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable

_YES = ("yes", "はい")
_NO = ("no", "いいえ")


def parse_yes_no(text: str) -> str:
    """'yes', 'no' or 'other'."""
    pred = text.lower().strip().replace(".", "").replace("。", "")
    if pred in _YES:
        return "yes"
    if pred in _NO:
        return "no"
    prefix = pred[:4]
    if any(word in prefix for word in _YES):
        return "yes"
    if any(word in prefix for word in _NO):
        return "no"
    return "other"


def normalize_open(text: str) -> str:
    return text.lower().strip().rstrip(".。").strip()


@dataclass(frozen=True)
class Prediction:
    question_id: str
    category: str
    answer: str  # the true answer
    prediction: str  # what the model said

    @property
    def yes_no(self) -> bool:
        return parse_yes_no(self.answer) != "other"

    @property
    def correct(self) -> bool:
        if self.yes_no:
            return parse_yes_no(self.prediction) == parse_yes_no(self.answer)
        return normalize_open(self.prediction) == normalize_open(self.answer)


@dataclass(frozen=True)
class CategoryScore:
    category: str
    kind: str  # "yes/no" (MME scored) or "open" (exact match)
    questions: int
    images: int
    acc: float  # percent
    acc_plus: float | None  # percent; None for open categories
    score: float | None  # acc + acc_plus, at most 200; None for open categories


def score_category(category: str, preds: list[Prediction]) -> CategoryScore:
    groups: dict[str, list[bool]] = defaultdict(list)
    for pred in preds:
        groups[pred.question_id].append(pred.correct)
    acc = 100.0 * sum(sum(g) for g in groups.values()) / len(preds)
    if not all(p.yes_no for p in preds):
        return CategoryScore(category, "open", len(preds), len(groups), acc, None, None)
    acc_plus = 100.0 * sum(all(g) for g in groups.values()) / len(groups)
    return CategoryScore(category, "yes/no", len(preds), len(groups), acc, acc_plus, acc + acc_plus)


def score(preds: Iterable[Prediction]) -> dict:
    """Per-category scores (in first-seen order) and the yes/no total, as a JSON-ready dict."""
    by_category: dict[str, list[Prediction]] = defaultdict(list)
    for pred in preds:
        by_category[pred.category].append(pred)
    categories = [score_category(name, items) for name, items in by_category.items()]
    yes_no = [c for c in categories if c.kind == "yes/no"]
    return {
        "categories": [asdict(c) for c in categories],
        "total": sum(c.score for c in yes_no),  # MME-style sum of category scores
        "total_max": 200 * len(yes_no),
    }
