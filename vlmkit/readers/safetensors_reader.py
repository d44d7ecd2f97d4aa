"""safetensors: single files and sharded ``*.safetensors.index.json`` checkpoints.

The header (8-byte little-endian length, then JSON) is parsed here rather than through
``safetensors.safe_open`` for two reasons: the library's errors do not say which tensor or which
offsets are at fault (``MetadataIncompleteBuffer``, ``InvalidOffset``), and a user handed a broken
file needs exactly that; and we want the metadata of a 70 B sharded checkpoint from its headers
alone, without mapping any shard. The checks are those of ``safetensors/src/tensor.rs``
(``read_metadata`` / ``Metadata::validate``). Tensor data is still read by the library
(``safe_open(framework="pt")``, memory-mapped), once our checks have passed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.constants import DTYPE_BITS
from vlmkit.errors import CheckpointError
from vlmkit.readers.base import Checkpoint, TensorInfo, one_line
from vlmkit.readers.index import ShardIndex, check_keys_present, read_index

if TYPE_CHECKING:
    import torch

MAX_HEADER_SIZE = 100_000_000   # safetensors' own limit: larger headers are refused, not parsed


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_size: int                # N, the JSON length
    entries: list[_Entry]
    metadata: dict[str, str]

    def infos(self) -> dict[str, TensorInfo]:
        data = 8 + self.header_size
        return {e.name: TensorInfo(e.name, e.shape, e.dtype, e.end - e.begin, self.path, data + e.begin)
                for e in self.entries}


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and validate one file's header; reads 8 + N bytes and nothing of the data."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise CheckpointError(path, f"file truncated: {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_SIZE:
            raise CheckpointError(path, f"header length {n} bytes exceeds the 100 MB limit (corrupt file?)")
        if 8 + n > size:
            raise CheckpointError(path, f"header length {n} bytes runs past end of file ({size} bytes; truncated?)")
        raw = file.read(n)
    table = _parse_json(path, raw)
    metadata = _metadata(path, table.pop("__metadata__", None))
    entries = [_entry(path, name, value) for name, value in table.items()]
    _check_layout(path, entries, size - 8 - n)
    return SafetensorsHeader(path, n, entries, metadata)


def _parse_json(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(path, "header is not valid UTF-8 (not a safetensors file?)") from None
    if not text.startswith("{"):
        raise CheckpointError(path, "header does not start with '{' (not a safetensors file?)")
    try:
        table = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"header is not valid JSON: {error.msg} at byte {error.pos}") from None
    if not isinstance(table, dict):
        raise CheckpointError(path, "header is not a JSON object")
    return table


def _metadata(path: Path, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CheckpointError(path, "header '__metadata__' must map strings to strings")
    return value


def _entry(path: Path, name: str, value: Any) -> _Entry:
    if not isinstance(value, dict):
        raise CheckpointError(path, f"tensor '{name}': header entry is not an object")
    dtype, shape, offsets = value.get("dtype"), value.get("shape"), value.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise CheckpointError(path, f"tensor '{name}': unknown dtype {dtype!r}")
    if not _ints(shape):
        raise CheckpointError(path, f"tensor '{name}': shape {shape!r} is not a list of non-negative integers")
    if not _ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise CheckpointError(path, f"tensor '{name}': data_offsets {offsets!r} are not [begin, end] with begin <= end")
    entry = _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])
    bits = math.prod(shape) * DTYPE_BITS[dtype]   # exact: Python ints do not overflow
    if bits % 8 or bits // 8 != entry.end - entry.begin:
        raise CheckpointError(path, f"tensor '{name}': {dtype} {list(shape)} needs {bits / 8:g} bytes but "
                                    f"data_offsets [{entry.begin}, {entry.end}) hold {entry.end - entry.begin}")
    return entry


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int and v >= 0 for v in value)


def _check_layout(path: Path, entries: list[_Entry], data_size: int) -> None:
    """Offsets must tile the data section exactly: in bounds, no overlap, no gap, nothing left over."""
    for e in entries:
        if e.end > data_size:
            raise CheckpointError(path, f"tensor '{e.name}' data [{e.begin}, {e.end}) runs past end of file "
                                        f"(the data section holds {data_size} bytes; truncated?)")
    previous: _Entry | None = None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        expected = previous.end if previous else 0
        if e.begin < expected:
            raise CheckpointError(path, f"tensor '{e.name}' data [{e.begin}, {e.end}) overlaps tensor "
                                        f"'{previous.name}' [{previous.begin}, {previous.end})")
        if e.begin > expected:
            where = f"after tensor '{previous.name}'" if previous else "at the start of the data section"
            raise CheckpointError(path, f"gap of {e.begin - expected} unused bytes {where}, before tensor "
                                        f"'{e.name}' [{e.begin}, {e.end})")
        previous = e
    end = previous.end if previous else 0
    if end != data_size:
        raise CheckpointError(path, f"{data_size - end} trailing bytes after the last tensor are not "
                                    "covered by any header entry")


class SafetensorsCheckpoint(Checkpoint):
    """One or more safetensors files; tensors are memory-mapped by ``safe_open`` on first load."""

    def __init__(self, path: Path, infos: dict[str, TensorInfo], metadata: dict[str, Any]):
        super().__init__(path, "safetensors", infos, metadata)
        self._handles: dict[Path, Any] = {}

    def load(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        try:
            return self._handle(info.file).get_tensor(name)
        except Exception as error:  # safetensors raises its own SafetensorError / OSError
            raise CheckpointError(info.file, f"cannot read tensor '{name}': {one_line(error)}") from None

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            from safetensors import safe_open

            self._handles[file] = safe_open(str(file), framework="pt")
        return self._handles[file]

    def close(self) -> None:
        self._handles.clear()


def open_safetensors(path: Path) -> SafetensorsCheckpoint:
    header = read_header(path)
    return SafetensorsCheckpoint(path, header.infos(), dict(header.metadata))


def open_safetensors_files(path: Path, files: list[Path]) -> SafetensorsCheckpoint:
    """Several safetensors files without an index (a directory of them): names must not repeat."""
    infos: dict[str, TensorInfo] = {}
    metadata: dict[str, Any] = {}
    for file in files:
        header = read_header(file)
        for name, info in header.infos().items():
            if name in infos:
                raise CheckpointError(file, f"tensor '{name}' is also in {infos[name].file.name}; "
                                            "add a model.safetensors.index.json to say which one is meant")
            infos[name] = info
        metadata = {**header.metadata, **metadata}
    return SafetensorsCheckpoint(path, infos, metadata)


def open_safetensors_index(path: Path, index: ShardIndex | None = None) -> SafetensorsCheckpoint:
    """A sharded checkpoint: the index's weight_map decides which tensor comes from which shard."""
    index = index or read_index(path)
    infos: dict[str, TensorInfo] = {}
    metadata: dict[str, Any] = {}
    for shard in index.shards:
        header = read_header(shard)
        shard_infos = header.infos()
        check_keys_present(index, shard, shard_infos)
        infos.update({name: shard_infos[name] for name in index.names_in(shard)})
        metadata = {**header.metadata, **metadata}
    ordered = {name: infos[name] for name in index.weight_map}
    return SafetensorsCheckpoint(path, ordered, {**metadata, **index.metadata})
