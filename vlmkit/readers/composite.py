"""Checkpoints split into sub-folders, one checkpoint each (VILA-1.5: ``llm/``, ``vision_tower/``,
``mm_projector/``), exposed as one: each tensor is named ``<subfolder>.<name>``.

No library reads this layout (VILA's own code, which we never execute, loads each part itself),
so the union is made here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from vlmkit.readers.base import Checkpoint, TensorInfo

if TYPE_CHECKING:
    import torch


class SubfolderCheckpoint(Checkpoint):
    def __init__(self, path: Path, parts: dict[str, Checkpoint]):
        infos: dict[str, TensorInfo] = {}
        self._owner: dict[str, tuple[Checkpoint, str]] = {}
        for prefix, part in parts.items():
            for name, info in part.infos.items():
                infos[prefix + name] = replace(info, name=prefix + name)
                self._owner[prefix + name] = (part, name)
        formats = {part.format for part in parts.values()}
        super().__init__(path, formats.pop() if len(formats) == 1 else "mixed", infos,
                         {"subfolders": {prefix.rstrip("."): part.format for prefix, part in parts.items()}})
        self._parts = parts

    def load(self, name: str) -> torch.Tensor:
        part, inner = self._owner[name]
        return part.load(inner)

    def close(self) -> None:
        for part in self._parts.values():
            part.close()
