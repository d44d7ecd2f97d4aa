"""The demo VLM asked the way MME asks, on scenes drawn outside the demo's generator (the test split: test_demo_model).

Issue 14's finding: 35/40 right on 40 MME-style yes/no questions about 20 lone, large shapes asked plainly, 25/40
with MME's "Please answer yes or no." appended. These scenes are drawn here with PIL, not by vlmkit.demo.scenes.
"""

import random

import pytest
from PIL import Image, ImageDraw

from vlmkit.demo.questions import YES_NO_REQUESTS
from vlmkit.demo.scenes import COLORS
from vlmkit.eval.vqa import answer, load

MME = YES_NO_REQUESTS["en"][0]


@pytest.fixture(scope="module")
def demo():
    return load("demo")


def lone_shape_scenes(n: int = 20) -> list[tuple[Image.Image, str, str]]:
    """(image, color, shape): one circle or square, 26-40 px wide, anywhere in a 64 px image, light background."""
    rng = random.Random("issue-14/outside-scenes")
    scenes = []
    for _ in range(n):
        color, shape = rng.choice(list(COLORS)), rng.choice(["circle", "square"])
        image = Image.new("RGB", (64, 64), (rng.randint(225, 250),) * 3)
        r = rng.uniform(13, 20)
        x, y = rng.uniform(r + 1, 63 - r), rng.uniform(r + 1, 63 - r)
        box = (x - r, y - r, x + r, y + r)
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
        scenes.append((image, color, shape))
    return scenes


def test_lone_large_shapes_with_and_without_mme_suffix(demo):
    net, processor = demo
    images, questions, truths = [], [], []
    for image, color, shape in lone_shape_scenes():
        other = random.Random(f"{color}{shape}").choice([c for c in COLORS if c != color])
        for asked, truth in ((color, "Yes"), (other, "No")):
            images.append(image)
            questions.append(f"Is there a {asked} {shape} in the image?")
            truths.append(truth)
    plain = answer(net, processor, images, questions)
    suffixed = answer(net, processor, images, [f"{q} {MME}" for q in questions])
    right_plain = sum(a == t for a, t in zip(plain, truths))
    right_suffixed = sum(a == t for a, t in zip(suffixed, truths))
    assert right_plain >= 36 and right_suffixed >= 36, (right_plain, right_suffixed)
