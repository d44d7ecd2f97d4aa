"""GGUF files through gguf-py's ``GGUFReader`` (memory-mapped; the data is read on ``load``).

Two things are done here on top of the reader: shapes are turned into PyTorch order (GGUF stores
``ne``, innermost dimension first), and a damaged file is reported in one line. gguf-py fails on
those with whatever numpy raises first (``cannot reshape array of size 12 into shape (4,8)``),
so the magic, size and every count in the header (``gguf_layout``: gguf-py loops without end on an
array length past the file) are checked before it runs, and its error is kept only as the detail.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import Checkpoint, TensorInfo, one_line
from vlmkit.readers.gguf_layout import check_layout

if TYPE_CHECKING:
    import torch

_MAGIC = b"GGUF"
_MIN_SIZE = 24   # magic, version, tensor count, KV count
_NATIVE = {"F32": np.float32, "F16": np.float16, "F64": np.float64,
           "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64}


class GGUFCheckpoint(Checkpoint):
    """``metadata`` holds every KV pair as plain Python values (strings decoded, arrays as lists).

    Token arrays are kept whole: decoding them costs little next to ``GGUFReader`` itself, and
    inspect needs their lengths (vocab size) and the special tokens.
    """

    def __init__(self, path: Path, reader: Any):
        infos = {t.name: _info(t, path) for t in reader.tensors}
        metadata = {name: _value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}
        super().__init__(path, "gguf", infos, metadata)
        self._file = path             # ``path`` may be relabelled to the directory the user named
        self._tensors = {t.name: t for t in reader.tensors}

    def load(self, name: str) -> torch.Tensor:
        import torch

        info, tensor = self.infos[name], self._tensors[name]
        if info.dtype in _NATIVE:
            return torch.from_numpy(np.array(tensor.data, dtype=_NATIVE[info.dtype]).reshape(info.shape))
        if info.dtype == "BF16":
            raw = np.array(tensor.data, dtype=np.uint8).view(np.int16)
            return torch.from_numpy(raw).view(torch.bfloat16).reshape(info.shape)
        from gguf.quants import dequantize

        try:
            values = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise CheckpointError(self._file, f"tensor '{name}': gguf-py cannot dequantize {info.dtype}") from None
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32).reshape(info.shape))

    def close(self) -> None:
        self._tensors = {}


def _info(tensor: Any, path: Path) -> TensorInfo:
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    return TensorInfo(tensor.name, shape, tensor.tensor_type.name, int(tensor.n_bytes), path)


def _value(field: Any) -> Any:
    value = field.contents()
    return value.tolist() if isinstance(value, np.ndarray) else value


def _check_counts(path: Path) -> None:
    """Every count and length in the KV / tensor-info sections fits in the file (see gguf_layout)."""
    import mmap

    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        check_layout(path, data)  # type: ignore[arg-type]


def _check_start(path: Path) -> int:
    """The file's size, once its magic and minimal size are those of a GGUF."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != _MAGIC:
        raise CheckpointError(path, f"bad magic {magic!r}, expected b'GGUF': not a GGUF file")
    if size < _MIN_SIZE:
        raise CheckpointError(path, f"file truncated: {size} bytes, shorter than a GGUF header")
    return size


def check_gguf(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checks ``open_gguf`` makes before gguf-py reads the file, and every tensor inside it
    (``gguf_layout.check_file``), without building gguf-py's fields; returns the scalar / string values of
    ``keys`` the file holds."""
    from vlmkit.readers.gguf_layout import check_file

    _check_start(path)
    return check_file(path, keys)


def open_gguf(path: Path) -> GGUFCheckpoint:
    from gguf import GGUFReader

    size = _check_start(path)
    _check_counts(path)
    try:
        reader = GGUFReader(path, "r")
        return GGUFCheckpoint(path, reader)
    except Exception as error:  # a field or tensor running past EOF surfaces as numpy's reshape / view error
        raise CheckpointError(path, f"corrupt or truncated GGUF ({size} bytes); gguf-py: {one_line(error)}") from None
