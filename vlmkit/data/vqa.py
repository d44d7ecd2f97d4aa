"""A local VQA evaluation set: one jsonl file, images beside it.

Format (the demo generator writes it; any set in this format loads the same way)::

    DIR/questions.jsonl      one JSON object per line
    DIR/images/000000.png    images, any format PIL opens

Each line has ``question_id`` (str; the Yes and the No question of an MME pair share it), ``image``
(path relative to the jsonl's directory, or absolute), ``question``, ``answer`` and ``category``;
other keys (``lang`` ...) are kept in ``extra``. Hand-written because the format is ours: a few
lines of json beat a datasets dependency for a few hundred rows.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vlmkit.errors import VlmkitError

JSONL_NAME = "questions.jsonl"
REQUIRED = ("question_id", "image", "question", "answer", "category")


@dataclass(frozen=True)
class VQARecord:
    question_id: str
    image: Path  # absolute once loaded
    question: str
    answer: str
    category: str
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def lang(self) -> str:
        return str(self.extra.get("lang", ""))


def find_jsonl(path: str | os.PathLike) -> Path:
    """``path`` may be the jsonl itself or a directory holding ``questions.jsonl`` (or one ``*.jsonl``)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise VlmkitError(path, "no such file or directory")
    if (path / JSONL_NAME).is_file():
        return path / JSONL_NAME
    found = sorted(path.glob("*.jsonl"))
    if len(found) != 1:
        raise VlmkitError(path, f"expected {JSONL_NAME} (or exactly one *.jsonl), found {len(found)} jsonl files")
    return found[0]


def load_vqa(path: str | os.PathLike) -> list[VQARecord]:
    jsonl = find_jsonl(path)
    records = []
    with open(jsonl, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                records.append(_parse(jsonl, number, line))
    if not records:
        raise VlmkitError(jsonl, "no questions in the file")
    return records


def _parse(jsonl: Path, number: int, line: str) -> VQARecord:
    where = f"{jsonl}:{number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise VlmkitError(where, f"not valid JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise VlmkitError(where, "each line must be a JSON object")
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise VlmkitError(where, f"missing field(s): {', '.join(missing)}")
    image = (jsonl.parent / str(row["image"])).resolve()
    if not image.is_file():
        raise VlmkitError(where, f"image not found: {image}")
    extra = {k: v for k, v in row.items() if k not in REQUIRED}
    return VQARecord(str(row["question_id"]), image, str(row["question"]), str(row["answer"]),
                     str(row["category"]), extra)


def write_vqa(out: str | os.PathLike, rows: Iterable[tuple[dict, "object | None"]]) -> Path:
    """Write ``(row, PIL image or None)`` pairs as a set; atomic: the directory appears complete or not at all.

    ``row`` holds the jsonl fields with ``image`` relative to ``out``; the image is saved there once.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VlmkitError(out, "already exists and is not empty; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with open(tmp / JSONL_NAME, "w", encoding="utf-8") as handle:
            for row, image in rows:
                if image is not None:
                    (tmp / row["image"]).parent.mkdir(parents=True, exist_ok=True)
                    image.save(tmp / row["image"])
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the set is a normal directory
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / JSONL_NAME
