"""Write a ``.safetensors`` file one tensor at a time.

Why by hand: ``safetensors.numpy.save_file`` takes every tensor in one dict, so a 3B model would sit
in memory whole. The format is an 8-byte header length, a JSON header (dtype, shape, byte offsets)
and the raw little-endian data in header order; knowing every shape up front, the header goes first
and each tensor's bytes follow as it is produced. Files are read back by the safetensors library.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vlmkit.constants import DTYPE_BITS
from vlmkit.readers.dtypes import numpy_dtype_name


def write_safetensors(path: Path, plan: list[tuple[str, tuple[int, ...], str]],
                      tensors: Iterable[tuple[str, np.ndarray]], metadata: dict[str, str] | None = None) -> None:
    """``plan``: (name, shape, safetensors dtype) in write order; ``tensors`` must yield them in that order."""
    header: dict[str, object] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    offset = 0
    for name, shape, dtype in plan:
        size = int(np.prod(shape, dtype=np.int64)) * DTYPE_BITS[dtype] // 8
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    expected = iter(plan)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, array in tensors:
            want = next(expected)
            got = (name, tuple(array.shape), numpy_dtype_name(array.dtype))
            if got != (want[0], tuple(want[1]), want[2]):
                raise AssertionError(f"safetensors writer: planned {want}, got {got}")
            np.ascontiguousarray(array).tofile(f)  # native order: little-endian on every platform torch runs on
        if next(expected, None) is not None:
            raise AssertionError("safetensors writer: fewer tensors than planned")
