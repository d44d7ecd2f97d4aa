"""The README's main job: draw a new scene, ask the demo model about it, compare with the truth."""

from __future__ import annotations

import os
import random
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vlmkit.demo.questions import OPEN, QA, YES_NO, Scene
from vlmkit.demo.scenes import random_scene, render
from vlmkit.metrics.mme import Prediction

# (kind, language) of the questions asked: both languages, yes/no and free-form.
ASKED = (("existence", "en"), ("open_color", "en"), ("open_count", "en"),
         ("position", "ja"), ("color", "ja"), ("open_position", "ja"))


@dataclass(frozen=True)
class Answered:
    question: str
    truth: str
    said: str
    category: str
    lang: str

    @property
    def correct(self) -> bool:
        return Prediction("", self.category, self.truth, self.said).correct


def questions_for(scene: Scene, rng: random.Random) -> list[QA]:
    asked = []
    for kind, lang in ASKED:
        if kind in YES_NO:
            asked.append(YES_NO[kind](scene, rng, rng.random() < 0.5, lang))
        else:
            asked.append(OPEN[kind](scene, rng, lang))
    return asked


def save_png(image, out: Path) -> Path:
    """Atomic: a temp file in the same directory, then os.replace."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def run_demo(seed: int | None = None, model: str | os.PathLike = "demo", out: Path | None = None) -> dict:
    """Returns {seed, image, scene, answers: [Answered...]}; a new random seed unless one is given."""
    from vlmkit.api import load
    from vlmkit.eval.vqa import answer_with_runner

    seed = secrets.randbelow(10**6) if seed is None else seed
    rng = random.Random(f"vlmkit-demo/showcase/{seed}")
    scene = random_scene(rng)
    image = render(scene)
    path = save_png(image, out or Path(tempfile.gettempdir()) / f"vlmkit-demo-{seed}.png")
    asked = questions_for(scene, rng)
    # through vlmkit.load: any VLM it runs (a GGUF directory on llama.cpp too), one-line errors otherwise
    with load(model) as runner:
        said = answer_with_runner(runner, [image] * len(asked), [qa.question for qa in asked])
    answers = [Answered(qa.question, qa.answer, s, qa.category, qa.lang) for qa, s in zip(asked, said)]
    return {"seed": seed, "image": path, "scene": scene, "answers": answers}
