"""The one API every checkpoint reader implements: tensor metadata up front, data on demand."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from vlmkit.readers import stream

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TensorInfo:
    """What is known about a tensor without reading its data.

    ``dtype`` is a canonical upper-case name: the safetensors names (F32, F16, BF16, I64, U8, ...)
    for unquantized tensors, the GGML type name (Q8_0, Q4_K, ...) for quantized GGUF tensors.
    ``shape`` is in PyTorch order (outermost first), also for GGUF tensors. ``offset`` is where the
    raw little-endian data starts in ``file`` when it lies there contiguous and validated
    (safetensors), so it can be streamed (``vlmkit.readers.stream``); None otherwise.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    file: Path
    offset: int | None = None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Checkpoint(ABC):
    """A set of tensors on disk plus the files that describe the model (config, tokenizer)."""

    path: Path                      # what the user named: a directory or a file
    format: str                     # "safetensors", "torch", "gguf", "npz"
    infos: dict[str, TensorInfo] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)   # format metadata (GGUF KV, safetensors __metadata__)

    @property
    def files(self) -> list[Path]:
        """Files holding the tensors (the named file itself when it holds none, e.g. a vocab-only GGUF)."""
        found = sorted({info.file for info in self.infos.values()})
        return found or ([self.path] if self.path.is_file() else [])

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    @property
    def total_bytes(self) -> int:
        return sum(info.nbytes for info in self.infos.values())

    @abstractmethod
    def load(self, name: str) -> torch.Tensor:
        """Read one tensor's data (memory-mapped where the format allows). GGUF quantized tensors
        come back dequantized to float32."""

    def load_all(self) -> Mapping[str, torch.Tensor]:
        return {name: self.load(name) for name in self.infos}

    # --- streaming, for writers (convert, quantize): plain reads, no memory map kept ---

    def names(self) -> list[str]:
        return list(self.infos)

    def read(self, name: str) -> np.ndarray:
        """One tensor as a fresh numpy array in its own dtype (bf16 through ml_dtypes)."""
        info = self.infos[name]
        if info.offset is not None:
            return stream.read_array(info)
        return _to_numpy(self.load(name))

    def iter_rows(self, name: str, max_bytes: int = stream.ROW_BLOCK_BYTES) -> Iterator[np.ndarray]:
        """The tensor in blocks of whole rows, each at most ~``max_bytes`` (one block for 0-/1-D)."""
        info = self.infos[name]
        if info.offset is None or len(info.shape) < 2:
            yield self.read(name)
            return
        yield from stream.iter_row_blocks(info, max_bytes)

    def copy_into(self, name: str, fout: BinaryIO) -> None:
        """Append the tensor's raw bytes to ``fout`` (file-to-file in the kernel where possible)."""
        info = self.infos[name]
        if info.offset is not None:
            stream.copy_into(info, fout)
        else:
            self.read(name).tofile(fout)

    def close(self) -> None:  # readers holding file handles override this
        pass

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.contiguous().numpy()


def one_line(error: BaseException) -> str:
    """The first non-empty line of a library's error message (torch's and gguf-py's run long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
