"""Calibration sources and fingerprints (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlmkit.errors import VlmkitError
from vlmkit.quant.calibration import Sample, load_samples


def test_jsonl_texts_split_into_calibration_and_held_out(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"text {i}"}) for i in range(10)) + "\n")
    calib, held = load_samples(str(path), 6, 3)
    assert [s.text for s in calib] == [f"text {i}" for i in range(6)]
    assert [s.text for s in held] == ["text 6", "text 7", "text 8"] and all(s.image is None for s in held)


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "fine"}\n{"txt": "typo"}\n')
    with pytest.raises(VlmkitError, match=r"texts.jsonl:2: expected a JSON object with a 'text' field"):
        load_samples(str(path), 2, 0)


def test_demo_source_is_train_split_and_held_out_is_test_split() -> None:
    from vlmkit.demo.dataset import make_item

    calib, held = load_samples("demo", 4, 2)
    assert calib[0].text == make_item("train", 0).questions[0].question
    assert held[0].text == make_item("test", 0).questions[0].question
    assert {s.fingerprint()["image_sha256"] for s in calib}.isdisjoint(s.fingerprint()["image_sha256"] for s in held)


def test_fingerprint_is_of_pixels_not_file_bytes(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (10, 200, 30))
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.bmp")
    prints = [Sample("q", Image.open(tmp_path / name)).fingerprint() for name in ("a.png", "b.bmp")]
    assert prints[0]["image_sha256"] == prints[1]["image_sha256"]
    assert Sample("q2", image).fingerprint()["text_sha256"] != prints[0]["text_sha256"]
