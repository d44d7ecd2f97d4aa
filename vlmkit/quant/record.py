"""What ``vlmkit quantize`` did to a model, kept beside it: ``vlmkit_quantization.json``.

``vlmkit quantize`` writes the file into each model directory it exports (the compressed-tensors folder, the
GGUF folder); ``vlmkit eval compare`` reads it from the candidate's directory so its HTML report shows the
per-layer error of the quantization next to the KLD it caused. The file::

    {"format": "vlmkit-quantization/1", "source": "<model>", "spec": {...method, bits, group_size...},
     "layers": [{"name", "block", "linear", "group_size", "relative_error", "awq"}, ...],
     "quality": {"<held-out set>": {"mean_kld": ..., ...}}, "notes": [...]}

``relative_error`` is ``‖(Ŵ − W) X‖ / ‖W X‖`` of each quantized Linear on the calibration inputs. A missing
file means "not quantized by vlmkit" (None), never an error; a malformed one is one line naming it.
This module imports nothing heavy: evaluation code reads the record without loading the quantizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError

QUANTIZATION_FILE = "vlmkit_quantization.json"
FORMAT = "vlmkit-quantization/1"
LAYER_KEYS = ("name", "block", "linear", "relative_error")


def record_file(model: str | Path) -> Path:
    """Where the record of ``model`` (a directory, or a model file such as ``model.gguf``) lives."""
    model = Path(model)
    return (model if model.is_dir() else model.parent) / QUANTIZATION_FILE


def write_record(model_dir: Path, source: str, spec: dict[str, Any], layers: list[dict[str, Any]],
                 quality: dict[str, Any], notes: list[str]) -> Path:
    """Write the record into ``model_dir`` (a directory being assembled by an atomic export)."""
    path = Path(model_dir) / QUANTIZATION_FILE
    data = {"format": FORMAT, "source": source, "spec": spec, "layers": layers, "quality": quality,
            "notes": notes}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    return path


def read_record(model: str | Path) -> dict[str, Any] | None:
    """The record beside ``model``, or None when it has none."""
    path = record_file(model)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VlmkitError(path, f"not a readable quantization record ({error.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise VlmkitError(path, f"not a quantization record (expected format {FORMAT!r})")
    layers = data.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) and all(k in x for k in LAYER_KEYS)
                                               for x in layers):
        raise VlmkitError(path, f"quantization record without a 'layers' list of {{{', '.join(LAYER_KEYS)}}}")
    data["file"] = str(path)
    return data
