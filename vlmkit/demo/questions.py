"""English and Japanese questions about a scene, with their true answers.

MME style for the yes/no categories (existence, count, color, position): for each image one question
whose answer is Yes and one whose answer is No. Free-form categories (open_color, open_count,
open_position) have short answers: "red" / 「赤」, "3", "top left" / 「左上」.

Benchmarks add a request for the answer's form to the question: MME ends each one with "Please answer yes
or no.", LLaVA's short-answer sets with "Answer the question using a single word or phrase.". Training asks
a share of its questions that way (:func:`phrased`, in both languages, several wordings) so the answer does
not depend on whether the request is there; :func:`with_benchmark_request` gives the test split's MME form.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from vlmkit.demo.scenes import COLORS, MAX_OBJECTS, QUADRANTS, SHAPES, Scene, Shape

YES_NO_CATEGORIES = ("existence", "count", "color", "position")
OPEN_CATEGORIES = ("open_color", "open_count", "open_position")
LANGS = ("en", "ja")
YES = {"en": "Yes", "ja": "はい"}
NO = {"en": "No", "ja": "いいえ"}

JA_COLOR = {"red": "赤", "green": "緑", "blue": "青", "yellow": "黄色", "purple": "紫"}
JA_COLOR_ADJ = {"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の"}
JA_SHAPE = {"circle": "円", "square": "四角", "triangle": "三角"}
JA_QUADRANT = {"top left": "左上", "top right": "右上", "bottom left": "左下", "bottom right": "右下"}
JA_SIDE = {"left": "左側", "right": "右側", "top": "上側", "bottom": "下側"}
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

# How benchmarks ask for the answer's form; the first of each is the standard one (MME's, LLaVA's).
YES_NO_REQUESTS = {
    "en": ("Please answer yes or no.", "Answer yes or no.", "Please answer the question with a single word: yes or no.",
           "Answer with Yes or No only."),
    "ja": ("「はい」か「いいえ」で答えてください。", "はいかいいえで答えてください。", "「はい」または「いいえ」で答えて。"),
}
SHORT_ANSWER_REQUESTS = {
    "en": ("Answer the question using a single word or phrase.", "Answer with a single word.", "Answer briefly."),
    "ja": ("単語か短い語句で答えてください。", "一言で答えてください。"),
}


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    category: str
    lang: str
    evidence: Shape | None = None  # training only: the object whose patches answer the question


def _name(obj_color: str, shape: str, lang: str) -> str:
    return f"{obj_color} {shape}" if lang == "en" else f"{JA_COLOR_ADJ[obj_color]}{JA_SHAPE[shape]}"


def existence(scene: Scene, rng: random.Random, yes: bool, lang: str) -> QA:
    if yes:
        obj = rng.choice(scene.objects)
        color, shape = obj.color, obj.shape
    else:
        color, shape = _absent_pair(scene, rng)
    q = (f"Is there a {color} {shape} in the image?" if lang == "en"
         else f"画像に{_name(color, shape, lang)}はありますか？")
    return QA(q, (YES if yes else NO)[lang], "existence", lang, scene.find(color, shape))


def _absent_pair(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """Half of the negatives share a color or a shape with a present object (so binding matters)."""
    absent = [(c, s) for c in COLORS for s in SHAPES if scene.find(c, s) is None]
    near = [(c, s) for c, s in absent if any(o.color == c or o.shape == s for o in scene.objects)]
    return rng.choice(near if near and rng.random() < 0.5 else absent)


def count(scene: Scene, rng: random.Random, yes: bool, lang: str) -> QA:
    n = len(scene.objects)
    if not yes:
        n = rng.choice([k for k in range(1, MAX_OBJECTS + 1) if k != n])
    en = "Is there 1 shape in the image?" if n == 1 else f"Are there {n} shapes in the image?"
    q = en if lang == "en" else f"画像に図形は{n}個ありますか？"
    return QA(q, (YES if yes else NO)[lang], "count", lang)


def _unique_shape_object(scene: Scene, rng: random.Random) -> Shape:
    return rng.choice([o for o in scene.objects if len(scene.with_shape(o.shape)) == 1])


def color(scene: Scene, rng: random.Random, yes: bool, lang: str) -> QA:
    obj = _unique_shape_object(scene, rng)
    asked = obj.color if yes else rng.choice([c for c in COLORS if c != obj.color])
    q = f"Is the {obj.shape} {asked}?" if lang == "en" else f"{JA_SHAPE[obj.shape]}は{JA_COLOR[asked]}ですか？"
    return QA(q, (YES if yes else NO)[lang], "color", lang, obj if yes else None)


def position(scene: Scene, rng: random.Random, yes: bool, lang: str) -> QA:
    obj = rng.choice(scene.objects)
    side = obj.horizontal if rng.random() < 0.5 else obj.vertical
    asked = side if yes else OPPOSITE[side]
    if lang == "en":
        q = f"Is the {obj.color} {obj.shape} {'on the' if asked in ('left', 'right') else 'at the'} {asked}?"
    else:
        q = f"{_name(obj.color, obj.shape, lang)}は{JA_SIDE[asked]}にありますか？"
    return QA(q, (YES if yes else NO)[lang], "position", lang, obj if yes else None)


def open_color(scene: Scene, rng: random.Random, lang: str) -> QA:
    obj = _unique_shape_object(scene, rng)
    if lang == "en":
        return QA(f"What color is the {obj.shape}?", obj.color, "open_color", lang, obj)
    return QA(f"{JA_SHAPE[obj.shape]}は何色ですか？", JA_COLOR[obj.color], "open_color", lang, obj)


def open_count(scene: Scene, rng: random.Random, lang: str) -> QA:
    q = "How many shapes are there?" if lang == "en" else "図形はいくつありますか？"
    return QA(q, str(len(scene.objects)), "open_count", lang)


def open_position(scene: Scene, rng: random.Random, lang: str) -> QA:
    obj = rng.choice(scene.objects)
    where = QUADRANTS[obj.quadrant]
    if lang == "en":
        return QA(f"Where is the {obj.color} {obj.shape}?", where, "open_position", lang, obj)
    return QA(f"{_name(obj.color, obj.shape, lang)}はどこにありますか？", JA_QUADRANT[where], "open_position", lang, obj)


def with_request(question: str, request: str, lang: str, newline: bool = False) -> str:
    """``question`` followed by ``request`` the way benchmarks join them (a space in English, none in Japanese)."""
    return question + ("\n" if newline else " " if lang == "en" else "") + request


def requests_for(qa: QA) -> tuple[str, ...]:
    """The wordings that ask for ``qa``'s answer form in its language, the benchmark's standard one first."""
    return (YES_NO_REQUESTS if qa.category in YES_NO_CATEGORIES else SHORT_ANSWER_REQUESTS)[qa.lang]


def with_benchmark_request(qa: QA) -> QA:
    """The question as MME asks it (yes/no) or as LLaVA's short-answer sets ask it (open questions)."""
    return replace(qa, question=with_request(qa.question, requests_for(qa)[0], qa.lang))


def phrased(qa: QA, rng: random.Random, share: float) -> QA:
    """Training: ``share`` of the questions end in a request for the answer's form, the standard one (MME's,
    LLaVA's) for ~60 % of them, another wording for the rest; share 0 draws nothing from ``rng``."""
    roll = rng.random() if share else 1.0
    if roll >= share:
        return qa
    roll /= share
    requests = requests_for(qa)
    request = requests[0] if roll < 0.6 else rng.choice(requests[1:])
    return replace(qa, question=with_request(qa.question, request, qa.lang, newline=rng.random() < 0.25))


YES_NO = {"existence": existence, "count": count, "color": color, "position": position}
OPEN = {"open_color": open_color, "open_count": open_count, "open_position": open_position}


def yes_no_pair(scene: Scene, rng: random.Random, category: str, lang: str) -> tuple[QA, QA]:
    """The MME pair for one image: the Yes question, then the No question."""
    make = YES_NO[category]
    return make(scene, rng, True, lang), make(scene, rng, False, lang)


def random_qa(scene: Scene, rng: random.Random, phrased_share: float = 0.0, position_share: float = 0.0) -> QA:
    """One question of any kind, for training, asked plainly or as benchmarks ask (:func:`phrased`).

    Yes/no categories are weighted like open ones x2; ``position_share`` of the questions are yes/no position
    questions on top of that (share 0 draws nothing from ``rng``, so earlier stages' batches are unchanged).
    """
    lang = rng.choice(LANGS)
    kinds = list(YES_NO) * 2 + list(OPEN)
    kind = "position" if position_share and rng.random() < position_share else rng.choice(kinds)
    if kind in YES_NO:
        return phrased(YES_NO[kind](scene, rng, rng.random() < 0.5, lang), rng, phrased_share)
    return phrased(OPEN[kind](scene, rng, lang), rng, phrased_share)


def corpus(scenes: list[Scene], rng: random.Random) -> list[str]:
    """Every question and answer template instantiated on ``scenes`` (tokenizer training text)."""
    texts: list[str] = []
    for scene in scenes:
        for lang in LANGS:
            for category in YES_NO:
                texts += [f"{qa.question} {qa.answer}" for qa in yes_no_pair(scene, rng, category, lang)]
            texts += [f"{make(scene, rng, lang).question} {make(scene, rng, lang).answer}" for make in OPEN.values()]
    return texts
