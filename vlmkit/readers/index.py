"""Sharded checkpoints: ``*.safetensors.index.json`` / ``pytorch_model.bin.index.json``.

The index is a plain JSON file (``{"metadata": {...}, "weight_map": {tensor: shard}}``); there is no
library parser for it that validates the shard paths, and an index downloaded from anywhere must not
make us open files outside the model directory, so the checks live here.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import one_line


@dataclass(frozen=True)
class ShardIndex:
    path: Path                      # the index file
    weight_map: dict[str, Path]     # tensor name -> shard file (inside the index's directory)
    metadata: dict[str, Any]

    @property
    def shards(self) -> list[Path]:
        return sorted(set(self.weight_map.values()))

    def names_in(self, shard: Path) -> list[str]:
        return [name for name, file in self.weight_map.items() if file == shard]


def read_index(path: Path) -> ShardIndex:
    data = _read_json(path)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(path, "index has no 'weight_map' object mapping tensor names to shard files")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(path, "index 'metadata' is not a JSON object")
    root = path.parent
    resolved = {name: _shard_path(path, root, name, shard) for name, shard in weight_map.items()}
    return ShardIndex(path, resolved, metadata)


def check_keys_present(index: ShardIndex, shard: Path, names: Iterable[str]) -> None:
    """Every tensor the index assigns to ``shard`` must be in it."""
    present = set(names)
    for name in index.names_in(shard):
        if name not in present:
            raise CheckpointError(index.path, f"weight_map['{name}'] points to shard '{shard.name}', "
                                              f"which has no tensor '{name}'")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"index is not valid JSON ({one_line(error)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "index is not a JSON object")
    return data


def _shard_path(index: Path, root: Path, name: str, shard: Any) -> Path:
    """Check one weight_map entry lexically.

    Lexically, not with ``Path.resolve()``: in the Hugging Face cache every shard is a symlink into
    ``../../blobs``, so resolving would reject every cached model. A relative name whose normal form
    does not climb out of the directory, and that exists, is accepted.
    """
    if not isinstance(shard, str) or not shard:
        raise CheckpointError(index, f"weight_map['{name}'] is not a shard file name")
    text = shard.replace("\\", "/")
    if text.startswith("/") or PureWindowsPath(shard).drive:
        raise CheckpointError(index, f"weight_map['{name}'] is an absolute path '{shard}'; "
                                     "shards must lie in the model directory")
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../") or normal == ".":
        raise CheckpointError(index, f"weight_map['{name}'] points outside the model directory: '{shard}'")
    file = root / normal
    if not file.is_file():
        raise CheckpointError(index, f"weight_map['{name}'] names a missing shard '{shard}'")
    return file

