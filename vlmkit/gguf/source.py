"""Stream source tensors out of a checkpoint, one at a time, without memory-mapping it.

Why not ``safetensors.safe_open`` or the mmap-based readers: pages touched through a memory map stay in
the process's resident set until the map is closed, so converting a 15 GB shard through mmap shows a
15 GB peak RSS. Here each tensor is read with plain file reads (``readinto``) into a buffer that is
freed right after it is written, and a tensor that needs no change is copied file-to-file in the kernel
(``os.copy_file_range``), like ``cp``. Only the safetensors header (8-byte length + JSON) is parsed
here; any other format falls back to ``vlmkit.readers.open_checkpoint(path).load(name)``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vlmkit.errors import CheckpointError

# safetensors dtype name -> numpy dtype (bf16 through ml_dtypes)
_NP_DTYPES = {"F32": "float32", "F16": "float16", "F64": "float64", "I64": "int64", "I32": "int32",
              "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _np_dtype(name: str) -> np.dtype:
    if name == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if name not in _NP_DTYPES:
        raise CheckpointError(None, f"unsupported tensor dtype {name}")
    return np.dtype(_NP_DTYPES[name])


@dataclass(frozen=True)
class SourceTensor:
    """Where one tensor's bytes are: ``file`` at absolute byte ``offset``."""

    name: str
    shape: tuple[int, ...]
    dtype: str          # safetensors dtype name: F32, F16, BF16 ...
    file: Path
    offset: int
    nbytes: int


class TensorSource:
    """Name -> SourceTensor for a model directory; ``read`` returns a fresh numpy array."""

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        self.tensors: dict[str, SourceTensor] = {}
        self._fallback = None
        files = _safetensors_files(self.model_dir)
        for file in files:
            self.tensors.update(_index_safetensors(file))
        if not files:
            for sub, prefix in _subfolder_prefixes(self.model_dir):
                for file in _safetensors_files(sub):
                    self.tensors.update(_index_safetensors(file, prefix))
        if not self.tensors:
            self._open_fallback()

    def _open_fallback(self) -> None:
        from vlmkit.readers import open_checkpoint

        checkpoint = open_checkpoint(self.model_dir)
        self._fallback = checkpoint
        for name, info in checkpoint.infos.items():
            self.tensors[name] = SourceTensor(name, tuple(info.shape), info.dtype, info.file, -1, info.nbytes)

    def names(self) -> list[str]:
        return list(self.tensors)

    def read(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        if self._fallback is not None:
            return _torch_to_numpy(self._fallback.load(name))
        buffer = np.empty(t.nbytes, dtype=np.uint8)
        with open(t.file, "rb", buffering=0) as f:
            f.seek(t.offset)
            if f.readinto(memoryview(buffer)) != t.nbytes:
                raise CheckpointError(t.file, f"tensor {name} is truncated")
        return buffer.view(_np_dtype(t.dtype)).reshape(t.shape)

    def copy_into(self, name: str, fout: BinaryIO) -> None:
        """Append the tensor's raw bytes to ``fout`` (file-to-file, no user-space buffer)."""
        t = self.tensors[name]
        if self._fallback is not None:
            self.read(name).tofile(fout)
            return
        fout.flush()
        position = fout.tell()
        with open(t.file, "rb", buffering=0) as f:
            _copy_range(f.fileno(), t.offset, fout.fileno(), position, t.nbytes)
        fout.seek(position + t.nbytes)


def _copy_range(src: int, src_off: int, dst: int, dst_off: int, n: int) -> None:
    while n > 0:
        try:
            done = os.copy_file_range(src, dst, min(n, 1 << 30), src_off, dst_off)
        except OSError:  # cross-device on old kernels, unsupported filesystems: plain reads
            done = os.pwrite(dst, os.pread(src, min(n, 1 << 24), src_off), dst_off)
        if done <= 0:
            raise CheckpointError(None, "source file ended early while copying")
        src_off, dst_off, n = src_off + done, dst_off + done, n - done


def _safetensors_files(model_dir: Path) -> list[Path]:
    if model_dir.is_file():
        return [model_dir] if model_dir.suffix == ".safetensors" else []
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [model_dir / f for f in sorted(set(weight_map.values()))]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    return sorted(model_dir.glob("*.safetensors"))


def _subfolder_prefixes(model_dir: Path) -> list[tuple[Path, str]]:
    """VILA-1.5 keeps each part in a subfolder (``llm/``, ``vision_tower/``, ``mm_projector/``): its
    tensors are named ``<subfolder>.<name>``, as vlmkit's readers expose them."""
    if not model_dir.is_dir():
        return []
    return [(sub, sub.name + ".") for sub in sorted(model_dir.iterdir())
            if sub.is_dir() and _safetensors_files(sub)]


def _index_safetensors(file: Path, prefix: str = "") -> dict[str, SourceTensor]:
    with open(file, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > 100_000_000 or header_len + 8 > file.stat().st_size:
            raise CheckpointError(file, f"bad safetensors header length {header_len}")
        header = json.loads(f.read(header_len))
    base = 8 + header_len
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        full = prefix + name
        out[full] = SourceTensor(full, tuple(entry["shape"]), entry["dtype"], file, base + start, end - start)
    return out


def _torch_to_numpy(tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.contiguous().numpy()


def iter_row_blocks(source: TensorSource, name: str, max_bytes: int = 32 << 20):
    """Yield the tensor in blocks of whole rows (outermost dimension), each at most ~``max_bytes``,
    so a dtype cast of a large embedding never holds the whole tensor."""
    t = source.tensors[name]
    if source._fallback is not None or len(t.shape) < 2:
        yield source.read(name)
        return
    rows, row_shape = t.shape[0], t.shape[1:]
    row_bytes = max(1, t.nbytes // max(rows, 1))
    step = max(1, max_bytes // row_bytes)
    dtype = _np_dtype(t.dtype)
    with open(t.file, "rb", buffering=0) as f:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            buffer = np.empty(n * row_bytes, dtype=np.uint8)
            f.seek(t.offset + start * row_bytes)
            if f.readinto(memoryview(buffer)) != buffer.nbytes:
                raise CheckpointError(t.file, f"tensor {name} is truncated")
            yield buffer.view(dtype).reshape(n, *row_shape)
