"""Write a GGUF file tensor by tensor with gguf-py's ``GGUFWriter``.

``GGUFWriter.add_tensor`` keeps every array until ``write_tensors_to_file``; instead the tensor table is
declared up front (``add_tensor_info``) and each tensor's data is produced and written only when its
turn comes (``write_tensor_data``), so at most one tensor is in memory. ``LazyTensor`` duck-types the
two things ``write_tensor_data`` uses from an ndarray (``nbytes``, ``tofile``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import gguf
import numpy as np


@dataclass
class LazyTensor:
    """One output tensor: its GGUF name, shape (PyTorch order), type, byte size and a writer."""

    name: str
    shape: tuple[int, ...]
    gtype: gguf.GGMLQuantizationType
    nbytes: int
    write: Callable[[BinaryIO], None]   # appends exactly ``nbytes`` bytes to the file
    source: str = ""                    # source tensor name, for the report

    def tofile(self, fout: BinaryIO) -> None:
        start = fout.tell()
        self.write(fout)
        if fout.tell() - start != self.nbytes:
            raise RuntimeError(f"{self.name}: wrote {fout.tell() - start} bytes, declared {self.nbytes}")

    def byteswap(self, inplace: bool = False):  # GGUF output is always little-endian here
        raise NotImplementedError


def write_gguf(path: Path, arch: str, add_kv: Callable[[gguf.GGUFWriter], None],
               tensors: Iterable[LazyTensor]) -> None:
    """Header and metadata first, then each tensor's data streamed in table order."""
    tensors = list(tensors)
    writer = gguf.GGUFWriter(path, arch)
    add_kv(writer)
    for t in tensors:
        # with raw_dtype given, tensor_dtype only matters when it is uint8 (packed quant bytes)
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.gtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        for t in tensors:
            writer.write_tensor_data(t)  # type: ignore[arg-type]
    finally:
        writer.close()

