"""Calibration and held-out samples: image + question pairs or plain texts, and their fingerprints.

Sources: ``demo`` (the demo generator's training split; held-out = its test split), a VQA set
(``questions.jsonl`` + images, :mod:`vlmkit.data.vqa`; held-out = the records after the calibration ones),
or a ``.txt`` (one text per non-empty line) / ``.jsonl`` (a ``text`` field per line). Image questions are
turned into model inputs exactly as ``vlmkit run`` does (chat template, processor, special tokens:
``TransformersBackend.prepare``). Every calibration sample is fingerprinted (sha256 of the image's decoded
RGB pixels and of the question text), so an evaluation can flag a set that overlaps it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError

FINGERPRINT_FILE = "vlmkit_calibration.json"  # vlmkit.data.calibration.CALIBRATION_FILE
HELD_OUT_TEXTS = (  # plain-text held-out prompts: the quality report shows the calibration domain's effect
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.",
    "Quantization maps each weight to a small set of levels; the question is what that costs in quality.",
    "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。",
    "東京都の今日の天気は晴れ、最高気温は２３度です。明日は雨が降るでしょう。",
)


@dataclass(frozen=True)
class Sample:
    text: str                 # the question (image samples) or the whole text
    image: Any = None         # PIL image or None
    image_file: Path | None = None

    def fingerprint(self) -> dict[str, str | None]:
        image_sha = None
        if self.image is not None:
            rgb = self.image.convert("RGB")
            digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
            digest.update(rgb.tobytes())
            image_sha = digest.hexdigest()
        return {"image_sha256": image_sha, "text_sha256": hashlib.sha256(self.text.encode()).hexdigest(),
                "image_file": str(self.image_file) if self.image_file else None}


def load_samples(source: str, n: int, n_held_out: int) -> tuple[list[Sample], list[Sample]]:
    """(calibration, held-out image/text samples of the same kind, disjoint from the calibration)."""
    if source == "demo":
        return _demo("train", n), _demo("test", n_held_out)
    path = Path(source)
    if not path.exists():
        raise VlmkitError(path, "calibration source not found (use 'demo', a questions.jsonl folder, "
                                "a .txt or a .jsonl of texts)")
    samples = _texts(path) if path.suffix in (".txt",) or _is_text_jsonl(path) else _vqa(path)
    if len(samples) < 1:
        raise VlmkitError(path, "no calibration samples in the source")
    return samples[:n], samples[n:n + n_held_out]


def _demo(split: str, n: int) -> list[Sample]:
    from vlmkit.demo.dataset import make_split

    out: list[Sample] = []
    for item in make_split(split, (n + 2) // 3):
        out += [Sample(qa.question, item.image) for qa in item.questions]
    return out[:n]


def _vqa(path: Path) -> list[Sample]:
    from vlmkit.data import load_vqa
    from vlmkit.runtime.prompt import load_image

    return [Sample(record.question, load_image(record.image), record.image) for record in load_vqa(path)]


def _is_text_jsonl(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".jsonl"):
        return False
    first = next((line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()), "{}")
    try:
        return "text" in json.loads(first) and "image" not in json.loads(first)
    except json.JSONDecodeError as error:
        raise VlmkitError(path, f"line 1 is not valid JSON ({error.msg})") from None


def _texts(path: Path) -> list[Sample]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".txt":
        return [Sample(line) for line in lines]
    out = []
    for number, line in enumerate(lines, 1):
        try:
            out.append(Sample(str(json.loads(line)["text"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise VlmkitError(f"{path}:{number}", "expected a JSON object with a 'text' field") from None
    return out


def held_out_texts() -> list[Sample]:
    return [Sample(text) for text in HELD_OUT_TEXTS]


class Encoder:
    """Samples -> model inputs, through the model's processor and chat template as ``vlmkit run`` builds
    them; a text-only model (or a VLM whose image path vlmkit cannot run) gets the question text alone."""

    def __init__(self, folder: Path, images: bool):
        from vlmkit.runtime.transformers_backend import TransformersBackend

        self.backend = TransformersBackend(folder, device="cpu", load_weights=False)
        self.images = images and self.backend.is_vlm

    def __call__(self, sample: Sample) -> dict[str, Any]:
        from vlmkit.runtime.prompt import user_message, uses_typed_content

        if sample.image is None:  # plain text: the tokenizer's own special tokens, no template
            return dict(self.backend.tokenizer(sample.text, return_tensors="pt"))
        images = [sample.image] if self.images else []
        typed = uses_typed_content(self.backend.chat_template())
        return dict(self.backend.prepare([user_message(sample.text, len(images), typed)], images).payload)


def write_fingerprints(out: Path, source: str, samples: list[Sample]) -> Path:
    """``vlmkit_calibration.json`` in the format ``vlmkit eval vqa`` reads (:mod:`vlmkit.data.calibration`:
    one fingerprint per image question), plus per-sample image / text hashes (text samples included)."""
    from vlmkit.data.calibration import write_fingerprints as write_record

    return write_record(out, [(s.image, s.text) for s in samples if s.image is not None], source=source,
                        n_samples=len(samples), sample_hashes=[s.fingerprint() for s in samples])
