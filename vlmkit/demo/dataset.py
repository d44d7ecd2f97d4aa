"""The demo's train / test splits: seeded scenes, each with one MME yes/no pair and one open question.

Every image is drawn from its own ``random.Random`` seeded by (split, seed, index), so an item never
depends on how many others were asked for, and train and test come from disjoint seed strings: the
test split is never trained on.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vlmkit.demo.questions import LANGS, OPEN, QA, YES_NO_CATEGORIES, with_benchmark_request, yes_no_pair
from vlmkit.demo.scenes import Scene, random_scene, render

SPLITS = ("train", "test")
TEST_IMAGES = 200  # 50 per MME category: scoring stays well under two minutes
LARGE_TEST_IMAGES = 2000  # 500 per category: one answer moves the MME-style total by ~0.3 points, not 1-3


@dataclass(frozen=True)
class Item:
    index: int
    scene: Scene
    image: Image.Image
    questions: tuple[QA, ...]  # the Yes question, the No question, then one open question

    @property
    def question_id(self) -> str:
        return f"{self.index:06d}"


def scene_rng(split: str, index: int, seed: int = 0) -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return random.Random(f"vlmkit-demo/{split}/{seed}/{index}")


def make_item(split: str, index: int, seed: int = 0) -> Item:
    """Image ``index`` gets the MME category ``index % 4`` and alternates English / Japanese."""
    rng = scene_rng(split, index, seed)
    scene = random_scene(rng)
    category = YES_NO_CATEGORIES[index % len(YES_NO_CATEGORIES)]
    lang = LANGS[(index // len(YES_NO_CATEGORIES)) % len(LANGS)]
    open_kind = list(OPEN.values())[(index // (len(YES_NO_CATEGORIES) * len(LANGS))) % len(OPEN)]
    questions = (*yes_no_pair(scene, rng, category, lang), open_kind(scene, rng, lang))
    return Item(index, scene, render(scene), questions)


def make_split(split: str = "test", n: int = TEST_IMAGES, seed: int = 0) -> list[Item]:
    return [make_item(split, i, seed) for i in range(n)]


def records(items: list[Item], benchmark_phrasing: bool = False) -> list[tuple[dict, Image.Image | None]]:
    """Rows in the :mod:`vlmkit.data.vqa` format; yes/no pairs share the image's question_id.

    ``benchmark_phrasing``: each question ends with the benchmark's request for the answer's form (MME's
    "Please answer yes or no." and its Japanese equivalent; LLaVA's short-answer request on open questions).
    """
    rows: list[tuple[dict, Image.Image | None]] = []
    for item in items:
        path = f"images/{item.question_id}.png"
        for k, qa in enumerate(item.questions):
            qa = with_benchmark_request(qa) if benchmark_phrasing else qa
            qid = item.question_id if k < 2 else f"{item.question_id}-open"
            row = {"question_id": qid, "image": path, "question": qa.question, "answer": qa.answer,
                   "category": qa.category, "lang": qa.lang}
            rows.append((row, item.image if k == 0 else None))
    return rows


def write_split(out: str | os.PathLike, split: str = "test", n: int = TEST_IMAGES, seed: int = 0,
                benchmark_phrasing: bool = False) -> Path:
    from vlmkit.data import write_vqa

    return write_vqa(out, records(make_split(split, n, seed), benchmark_phrasing))
