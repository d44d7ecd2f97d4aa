"""The one API every checkpoint reader implements: tensor metadata up front, data on demand."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TensorInfo:
    """What is known about a tensor without reading its data.

    ``dtype`` is a canonical upper-case name: the safetensors names (F32, F16, BF16, I64, U8, ...)
    for unquantized tensors, the GGML type name (Q8_0, Q4_K, ...) for quantized GGUF tensors.
    ``shape`` is in PyTorch order (outermost first), also for GGUF tensors.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    file: Path

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

    def close(self) -> None:  # readers holding file handles override this
        pass

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def one_line(error: BaseException) -> str:
    """The first non-empty line of a library's error message (torch's and gguf-py's run long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
