"""big_vision ``.npz`` checkpoints (PaliGemma, SigLIP): one ``.npy`` member per parameter.

Members of a zip cannot be memory-mapped, and ``np.load(...)[name]`` reads a whole array, so the
metadata comes from each member's ``.npy`` header alone (``numpy.lib.format.read_magic`` /
``read_array_header_*``): a few dozen bytes per tensor. Names are kept as stored
(``params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel``). big_vision writes bfloat16 as a
2-byte void dtype (``|V2``); it is read back through ``ml_dtypes.bfloat16``. Object arrays would need
pickle and are refused (``allow_pickle=False`` throughout).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib import format as npy_format

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import Checkpoint, TensorInfo, one_line
from vlmkit.readers.dtypes import numpy_dtype_name

if TYPE_CHECKING:
    import torch

_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}


class NpzCheckpoint(Checkpoint):
    def __init__(self, path: Path, infos: dict[str, TensorInfo]):
        super().__init__(path, "npz", infos, {})
        self._file = path             # ``path`` may be relabelled to the directory the user named
        self._npz: Any = None

    def load(self, name: str) -> torch.Tensor:
        import ml_dtypes
        import torch

        info = self.infos[name]
        try:
            if self._npz is None:
                self._npz = np.load(self._file, allow_pickle=False)
            array = self._npz[name]
        except Exception as error:  # zlib / zipfile errors for a damaged member
            raise CheckpointError(self._file, f"cannot read array '{name}': {one_line(error)}") from None
        if info.dtype == "BF16":
            bf16 = array.view(ml_dtypes.bfloat16)       # what the bytes mean ...
            return torch.from_numpy(np.ascontiguousarray(bf16).view(np.int16)).view(torch.bfloat16)  # ... for torch
        return torch.from_numpy(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("="), copy=False))

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()
            self._npz = None


def open_npz(path: Path) -> NpzCheckpoint:
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {}
            for member in archive.infolist():
                if member.filename.endswith(".npy"):
                    info = _member_info(path, archive, member)
                    infos[info.name] = info
    except CheckpointError:
        raise
    except Exception as error:  # zipfile: BadZipFile, EOFError, encrypted / unsupported members, zlib errors
        raise CheckpointError(path, f"not a readable .npz (zip) archive, truncated or corrupt: "
                                    f"{one_line(error)}") from None
    return NpzCheckpoint(path, infos)


def _member_info(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> TensorInfo:
    name = member.filename[: -len(".npy")]
    with archive.open(member) as file:
        try:
            version = npy_format.read_magic(file)
            if version not in _HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _fortran, dtype = _HEADER_READERS[version](file)
        except ValueError as error:
            raise CheckpointError(path, f"array '{name}': bad .npy header: {one_line(error)}") from None
    if dtype.hasobject:
        raise CheckpointError(path, f"array '{name}' is an object array (needs pickle, which is refused)")
    dtype_name = numpy_dtype_name(dtype)
    if dtype_name is None:
        raise CheckpointError(path, f"array '{name}' has dtype {dtype.str}, which is not a tensor dtype")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return TensorInfo(name, tuple(int(n) for n in shape), dtype_name, nbytes, path)
