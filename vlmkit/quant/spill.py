"""The packed Linears of the quantized model, written to disk block by block as the block loop makes them and
read back on demand by the exports, so memory holds one block's worth, not the model's (a 7.5 B model's W4
Linears are 3.7 GB; at 1 B, 0.5 GB of a ~1.5 GB peak). Files are safetensors (the library's own reader and
writer), one per block, in a scratch directory the caller owns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

SEPARATOR = "::"  # "<checkpoint tensor name>::<compressed-tensors key>" inside a block's file


class SpilledPacked(Mapping[str, dict[str, torch.Tensor]]):
    """Checkpoint weight name -> its compressed-tensors tensors (``weight_packed``, ``weight_scale`` ...)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._file_of: dict[str, Path] = {}
        self._loaded: tuple[Path | None, dict[str, torch.Tensor]] = (None, {})

    def add_block(self, index: int, packed: dict[str, dict[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        path = self.folder / f"block-{index:05d}.safetensors"
        save_file({f"{name}{SEPARATOR}{key}": tensor.contiguous() for name, tensors in packed.items()
                   for key, tensor in tensors.items()}, path)
        self._file_of.update(dict.fromkeys(packed, path))

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = self._file_of[name]
        if self._loaded[0] != path:  # exports read in checkpoint order: one block's file at a time
            self._loaded = (path, load_file(path))
        prefix = name + SEPARATOR
        return {key[len(prefix):]: tensor for key, tensor in self._loaded[1].items() if key.startswith(prefix)}

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)
