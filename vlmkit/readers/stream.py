"""Stream a tensor's bytes out of its file: whole arrays, blocks of rows, or a file-to-file copy.

Why not through the memory map the readers' ``load`` uses: pages touched through a memory map stay in
the process's resident set until the map is closed, so converting a 15 GB shard through mmap shows a
15 GB peak RSS. Here each tensor is read with plain file reads (``readinto``) into a buffer that is
freed right after use, and a tensor that needs no change is copied in the kernel
(``os.copy_file_range``), like ``cp``. No library offers these reads for safetensors (the library's
``safe_open`` only maps). Only tensors whose raw little-endian bytes lie contiguous in a file
(``TensorInfo.offset``, set by the safetensors reader after validating the header) stream this way;
any other goes through its reader's ``load``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from vlmkit.constants import numpy_dtype
from vlmkit.errors import DISK_FULL_ERRNOS, CheckpointError

if TYPE_CHECKING:
    from vlmkit.readers.base import TensorInfo

ROW_BLOCK_BYTES = 8 << 20   # a bf16 block passes through float32 (2x) and the output type: ~32 MB at once
_COPY_CHUNK = 1 << 30
_READ_CHUNK = 1 << 24


def read_array(info: TensorInfo) -> np.ndarray:
    """The tensor as a fresh numpy array (its own dtype, PyTorch shape)."""
    buffer = _read(info, info.offset, info.nbytes)
    return buffer.view(numpy_dtype(info.dtype)).reshape(info.shape)


def iter_row_blocks(info: TensorInfo, max_bytes: int = ROW_BLOCK_BYTES) -> Iterator[np.ndarray]:
    """Blocks of whole rows (outermost dimension), each at most ~``max_bytes``, so a cast of a large
    embedding never holds the whole tensor."""
    rows = info.shape[0] if info.shape else 1
    row_shape = info.shape[1:]
    row_bytes = max(1, info.nbytes // max(rows, 1))
    step = max(1, max_bytes // row_bytes)
    dtype = numpy_dtype(info.dtype)
    for start in range(0, rows, step):
        count = min(step, rows - start)
        block = _read(info, info.offset + start * row_bytes, count * row_bytes)
        yield block.view(dtype).reshape(count, *row_shape)


def copy_into(info: TensorInfo, fout: BinaryIO) -> None:
    """Append the tensor's raw bytes to ``fout`` file-to-file, with no user-space buffer."""
    fout.flush()
    position = fout.tell()
    with open(info.file, "rb", buffering=0) as source:
        _copy_range(info, source.fileno(), info.offset, fout.fileno(), position, info.nbytes)
    fout.seek(position + info.nbytes)


def _read(info: TensorInfo, offset: int, nbytes: int) -> np.ndarray:
    buffer = np.empty(nbytes, dtype=np.uint8)
    with open(info.file, "rb", buffering=0) as source:
        source.seek(offset)
        if source.readinto(memoryview(buffer)) != nbytes:
            raise CheckpointError(info.file, f"tensor '{info.name}' ends early: the file shrank after it was opened")
    return buffer


def _copy_range(info: TensorInfo, src: int, src_off: int, dst: int, dst_off: int, n: int) -> None:
    while n > 0:
        try:
            done = os.copy_file_range(src, dst, min(n, _COPY_CHUNK), src_off, dst_off)
        except OSError as error:  # cross-device on old kernels, unsupported filesystems: plain reads
            if error.errno in DISK_FULL_ERRNOS:   # the output's fault, not the copy method's: never retried
                raise
            done = os.pwrite(dst, os.pread(src, min(n, _READ_CHUNK), src_off), dst_off)
        if done <= 0:
            raise CheckpointError(info.file, f"tensor '{info.name}' ends early: the file shrank after it was opened")
        src_off, dst_off, n = src_off + done, dst_off + done, n - done

