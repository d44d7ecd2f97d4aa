"""Procedural scenes for the demo VLM: a few colored shapes on a plain background, drawn with PIL.

Hand-written because no library makes seeded, labelled toy scenes whose ground truth we know exactly.
Each shape sits in its own quadrant of the image (with jitter), so "left / right / top / bottom" and
the object count are unambiguous, and each (color, shape) pair appears at most once, so "the red
circle" always names one object.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 4x and downsample: smooth edges, like a photo rather than pixel art
BACKGROUND = (235, 235, 230)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 170),
}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
MAX_OBJECTS = 4


@dataclass(frozen=True)
class Shape:
    shape: str
    color: str
    quadrant: int  # index into QUADRANTS
    cx: float  # centre, in pixels of the 64x64 image
    cy: float
    radius: float

    @property
    def horizontal(self) -> str:
        return "left" if self.quadrant % 2 == 0 else "right"

    @property
    def vertical(self) -> str:
        return "top" if self.quadrant < 2 else "bottom"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Shape, ...]

    def find(self, color: str, shape: str) -> Shape | None:
        return next((o for o in self.objects if o.color == color and o.shape == shape), None)

    def with_shape(self, shape: str) -> list[Shape]:
        return [o for o in self.objects if o.shape == shape]


BIG_LONE_SHARE = 0.4  # of the one-shape scenes, drawn big (up to half the image wide)


def random_scene(rng: random.Random, big_lone: float = BIG_LONE_SHARE) -> Scene:
    """1-4 shapes, distinct (color, shape) pairs, at least one shape kind present exactly once; ``big_lone`` of the
    one-shape scenes hold a big shape (0 draws nothing more from ``rng``: the first training stage's scenes)."""
    while True:
        count = rng.randint(1, MAX_OBJECTS)
        quadrants = rng.sample(range(4), count)
        pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES], count)
        kinds = [s for _, s in pairs]
        if any(kinds.count(k) == 1 for k in kinds):
            break
    if big_lone and count == 1 and rng.random() < big_lone:
        return Scene((_place_big(rng, *pairs[0], quadrants[0]),))
    objects = tuple(_place(rng, color, shape, q) for (color, shape), q in zip(pairs, quadrants))
    return Scene(objects)


def _place_big(rng: random.Random, color: str, shape: str, quadrant: int) -> Shape:
    """A lone shape up to half the image wide, its centre clearly inside ``quadrant`` (so the side is unambiguous)."""
    radius = rng.uniform(12.5, 18.0)
    half = IMAGE_SIZE / 2
    near, far = radius + 1.5, half - (0.3 * radius + 2)  # distance of the centre from the image's edge
    cx, cy = (rng.uniform(near, far) for _ in range(2))
    cx, cy = (cx if quadrant % 2 == 0 else IMAGE_SIZE - cx), (cy if quadrant < 2 else IMAGE_SIZE - cy)
    return Shape(shape, color, quadrant, round(cx, 2), round(cy, 2), round(radius, 2))


def _place(rng: random.Random, color: str, shape: str, quadrant: int) -> Shape:
    radius = rng.choice([rng.uniform(5.0, 7.5), rng.uniform(9.0, 12.0)])  # small or large
    half = IMAGE_SIZE / 2
    x0, y0 = (quadrant % 2) * half, (quadrant // 2) * half
    margin = radius + 1.5
    cx = x0 + rng.uniform(margin, half - margin)
    cy = y0 + rng.uniform(margin, half - margin)
    return Shape(shape, color, quadrant, round(cx, 2), round(cy, 2), round(radius, 2))


def render(scene: Scene) -> Image.Image:
    big = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw(draw, obj)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)


def mask(obj: Shape) -> Image.Image:
    """The object's silhouette ("L", 255 inside) at the supersampled size, for per-patch labels."""
    big = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    _draw(ImageDraw.Draw(image), obj, fill=255)
    return image


def _draw(draw: ImageDraw.ImageDraw, obj: Shape, fill: object = None) -> None:
    s = SUPERSAMPLE
    x, y, r = obj.cx * s, obj.cy * s, obj.radius * s
    fill = COLORS[obj.color] if fill is None else fill
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "square":
        side = r * 0.9
        draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
    else:
        draw.polygon([(x, y - r), (x + r * 0.95, y + r * 0.75), (x - r * 0.95, y + r * 0.75)], fill=fill)
