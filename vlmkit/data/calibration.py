"""Which (image, question) samples a quantized model was calibrated on: fingerprints, and the file that lists them.

``vlmkit quantize`` records its calibration set in ``vlmkit_calibration.json`` beside the model it writes
(the HF directory, or the GGUF's directory); ``vlmkit eval vqa`` warns when its evaluation set overlaps it,
since a model scored on its own calibration data looks better than it is. The file::

    {"format": "vlmkit-calibration/1", "fingerprints": ["<sha256 hex>", ...], ...any other keys}

A fingerprint is ``sha256(b"%dx%d\\n" % (width, height) + RGB pixel bytes + b"\\n" + question UTF-8)``: decoded
pixels, so the same picture saved as PNG or held in memory (the demo's generated scenes) gives the same
fingerprint. A missing file means "not recorded", never an error; a malformed one is reported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError

CALIBRATION_FILE = "vlmkit_calibration.json"
FORMAT = "vlmkit-calibration/1"


def fingerprint(image: Any, question: str) -> str:
    """The sha256 hex fingerprint of one sample (``image``: a PIL image)."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(b"%dx%d\n" % rgb.size)
    digest.update(rgb.tobytes())
    digest.update(b"\n" + question.encode("utf-8"))
    return digest.hexdigest()


def calibration_file(model: Path) -> Path:
    """Where the record of ``model`` (a directory or a model file) lives."""
    model = Path(model)
    return (model if model.is_dir() else model.parent) / CALIBRATION_FILE


def read_fingerprints(model: Path) -> set[str] | None:
    """The recorded fingerprints of ``model``'s calibration set; None when none was recorded."""
    path = calibration_file(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VlmkitError(path, f"not a readable calibration record ({error.__class__.__name__})") from None
    prints = data.get("fingerprints") if isinstance(data, dict) else None
    if not isinstance(prints, list) or not all(isinstance(p, str) for p in prints):
        raise VlmkitError(path, "calibration record without a 'fingerprints' list of strings")
    return set(prints)


def write_fingerprints(model_dir: Path, samples: Iterable[tuple[Any, str]], **extra: Any) -> Path:
    """Record a calibration set (``(image, question)`` pairs) beside a model, atomically."""
    import os

    path = Path(model_dir) / CALIBRATION_FILE
    data = {"format": FORMAT, **extra, "fingerprints": sorted({fingerprint(i, q) for i, q in samples})}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def overlap(model: Path, samples: list[tuple[Any, str]]) -> dict[str, Any] | None:
    """How many evaluation samples were in ``model``'s calibration set (None: no record)."""
    recorded = read_fingerprints(model)
    if recorded is None:
        return None
    hits = sum(1 for image, question in samples if fingerprint(image, question) in recorded)
    return {"file": str(calibration_file(model)), "overlapping": hits, "evaluated": len(samples)}
