"""Walk a GGUF file's KV and tensor-info sections before gguf-py parses them.

Written by hand because gguf-py's ``GGUFReader`` trusts the counts it reads: an array whose length
field says 2**62 makes it loop, appending one empty numpy view per element past the end of the file,
until the process runs out of memory (seen with a 1.6 kB file). Here every count and length is
checked against the bytes that remain before anything is allocated for it, so a lying file costs at
most its own size. The layout is gguf-py's ``GGUFReader`` / llama.cpp's ``gguf.cpp``: little-endian,
u64 lengths and counts, strings as (u64 length, bytes).

``read_values`` walks the same way to pick a few scalar / string values out of the KV section: gguf-py's
``GGUFReader`` first builds a numpy view for every element of every array, ~2 s for a 65k-token vocabulary,
which ``vlmkit run`` would pay for each key it looks up.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any

from vlmkit.errors import CheckpointError

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}                                                            # GGUFValueType
_SCALAR_BYTES = {vtype: struct.calcsize(fmt) for vtype, fmt in _SCALAR_FORMATS.items()}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
_MAX_DIMS = 4          # GGML_MAX_DIMS
_TENSOR_INFO_MIN = 24  # name length 8 + n_dims 4 + type 4 + offset 8
_MAX_DEPTH = 4         # arrays of arrays nest at most this deep


class _Cursor:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(self.path, f"{what} runs past the end of the file at byte {self.pos} "
                                             f"({len(self.data)} bytes; truncated or corrupt GGUF)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def string(self, what: str) -> bytes:
        return self.take(self.u64(f"{what} length"), what)


def check_layout(path: Path, data: bytes) -> None:
    """Raise a one-line CheckpointError unless every count in ``data`` (the whole file) fits in it."""
    cursor, n_tensors, n_kv = _header(path, data)
    for index in range(n_kv):
        key = cursor.string(f"KV #{index} key").decode("utf-8", "replace")
        _skip_value(cursor, cursor.u32(f"KV '{key}' type"), f"KV '{key}'", 0)
    _check_count(cursor, n_tensors, _TENSOR_INFO_MIN, "tensor count")
    for index in range(n_tensors):
        _tensor_info(cursor, index)


def check_file(path: Path, keys: Collection[str] = ()) -> dict[str, Any]:
    """``check_layout`` of the file at ``path``, then every tensor's data must lie inside it (as llama.cpp
    checks when it loads); returns ``read_values(path, keys)``. What ``vlmkit run`` checks before handing a
    GGUF to llama.cpp, without gguf-py's GGUFReader (~2 s for a 65k-token vocabulary)."""
    return _walk(path, keys)[0]


def tensor_ranges(path: Path) -> dict[str, tuple[int, int]]:
    """Each tensor's data as [start, end) byte offsets in the file (checked to lie inside it)."""
    return _walk(path, ())[1]


def _walk(path: Path, keys: Collection[str]) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """One walk of the header making ``check_layout``'s checks (same messages), then the tensors' data bounds."""
    import gguf

    found: dict[str, Any] = {}
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor, n_tensors, n_kv = _header(path, data)   # type: ignore[arg-type]
        wanted = {*keys, gguf.Keys.General.ALIGNMENT}
        for index in range(n_kv):
            key = cursor.string(f"KV #{index} key").decode("utf-8", "replace")
            _read_or_skip(cursor, key, cursor.u32(f"KV '{key}' type"), wanted, found)
        _check_count(cursor, n_tensors, _TENSOR_INFO_MIN, "tensor count")
        tensors = [_tensor_info(cursor, index) for index in range(n_tensors)]
        alignment = int(found.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)) or 1
        start = -(-cursor.pos // alignment) * alignment
        room = len(data) - start
    ranges = {}
    for name, dims, ggml_type, offset in tensors:
        try:
            block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise CheckpointError(path, f"tensor '{name}' has unknown type {ggml_type} (corrupt GGUF?)") from None
        count = 1
        for n in dims:
            count *= n
        if dims and dims[0] % block or offset + count // block * size > room:
            raise CheckpointError(path, f"tensor '{name}' data runs past the end of the file ({room} bytes of "
                                        "tensor data; truncated or corrupt GGUF)")
        ranges[name] = (start + offset, start + offset + count // block * size)
    return {key: value for key, value in found.items() if key in keys}, ranges


def _tensor_info(cursor: _Cursor, index: int) -> tuple[str, list[int], int, int]:
    """Tensor #``index``'s name, dimensions, ggml type and data offset (relative to the data section)."""
    name = cursor.string(f"tensor #{index} name").decode("utf-8", "replace")
    n_dims = cursor.u32(f"tensor '{name}' dimension count")
    if n_dims > _MAX_DIMS:
        raise CheckpointError(cursor.path, f"tensor '{name}' has {n_dims} dimensions (GGUF allows {_MAX_DIMS})")
    *dims, ggml_type, offset = struct.unpack(f"<{n_dims}QIQ", cursor.take(8 * n_dims + 4 + 8, f"tensor '{name}' info"))
    return name, dims, ggml_type, offset


def _read_or_skip(cursor: _Cursor, key: str, vtype: int, keys: Collection[str], found: dict[str, Any]) -> None:
    what = f"KV '{key}'"
    if key in keys and vtype in _SCALAR_FORMATS:
        found[key] = struct.unpack(_SCALAR_FORMATS[vtype], cursor.take(_SCALAR_BYTES[vtype], what))[0]
    elif key in keys and vtype == _STRING:
        found[key] = cursor.string(what).decode("utf-8", "replace")
    else:
        _skip_value(cursor, vtype, what, 0)


def read_values(path: Path, keys: Collection[str]) -> dict[str, Any]:
    """The values of those of ``keys`` that the GGUF at ``path`` holds as a scalar or a string (decoded);
    every other value is skipped unread. A damaged file raises the one-line CheckpointError of
    ``check_layout``."""
    found: dict[str, Any] = {}
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor, _, n_kv = _header(path, data)   # type: ignore[arg-type]
        for index in range(n_kv):
            if len(found) == len(keys):
                break
            key = cursor.string(f"KV #{index} key").decode("utf-8", "replace")
            _read_or_skip(cursor, key, cursor.u32(f"KV '{key}' type"), keys, found)
    return found


def _header(path: Path, data: bytes) -> tuple[_Cursor, int, int]:
    """A cursor after the header, the tensor count and the KV count (checked to fit)."""
    cursor = _Cursor(path, data)
    cursor.take(4, "magic")
    version = cursor.u32("version")
    if version not in (2, 3):
        raise CheckpointError(path, f"GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cursor.u64("tensor count"), cursor.u64("KV count")
    _check_count(cursor, n_kv, 13, "KV count")          # key length 8 + 1 byte + type 4
    return cursor, n_tensors, n_kv


def _check_count(cursor: _Cursor, count: int, min_bytes: int, what: str) -> None:
    if count * min_bytes > cursor.remaining():
        raise CheckpointError(cursor.path, f"{what} {count} cannot fit in the {cursor.remaining()} bytes left "
                                           "(corrupt GGUF)")


def _skip_strings(cursor: _Cursor, count: int, what: str) -> None:
    """Skip ``count`` strings in one tight loop: a vocabulary's tokens and merges are ~130k strings at 65k
    tokens, ~0.6 s through ``_Cursor.string``."""
    data, pos, end, unpack = cursor.data, cursor.pos, len(cursor.data), _U64.unpack_from
    for _ in range(count):
        if pos + 8 > end:
            break
        pos += 8 + unpack(data, pos)[0]
    else:
        if pos <= end:
            cursor.pos = pos
            return
    cursor.take(end - cursor.pos + 1, what)   # past the end: raises the cursor's one-line error


def _skip_value(cursor: _Cursor, vtype: int, what: str, depth: int) -> None:
    if vtype in _SCALAR_BYTES:
        cursor.take(_SCALAR_BYTES[vtype], what)
    elif vtype == _STRING:
        cursor.string(what)
    elif vtype == _ARRAY and depth < _MAX_DEPTH:
        item_type, count = cursor.u32(f"{what} item type"), cursor.u64(f"{what} length")
        if item_type in _SCALAR_BYTES:
            _check_count(cursor, count, _SCALAR_BYTES[item_type], f"{what}: array length")
            cursor.take(count * _SCALAR_BYTES[item_type], what)
            return
        _check_count(cursor, count, 8 if item_type == _STRING else 12, f"{what}: array length")
        if item_type == _STRING:
            _skip_strings(cursor, count, what)
            return
        for _ in range(count):
            _skip_value(cursor, item_type, what, depth + 1)
    else:
        raise CheckpointError(cursor.path, f"{what} has unknown value type {vtype} (corrupt GGUF)")
