"""Legacy PyTorch checkpoints: ``pytorch_model.bin`` (and ``*.pt`` / ``*.pth``) and their sharded index.

Only ever through ``torch.load(weights_only=True, mmap=True)``: torch's restricted unpickler refuses
any global that is not a tensor building block, so a malicious pickle fails instead of running, and
mmap leaves the tensor data on disk until a tensor is touched. What is checked here is what torch
reports badly: the legacy (pre-1.6, non-zip) format mmap cannot read, and the multi-paragraph
"Weights only load failed" message, reduced to the one global that was refused.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import Checkpoint, TensorInfo, one_line
from vlmkit.readers.dtypes import torch_dtype_name
from vlmkit.readers.index import ShardIndex, check_keys_present, read_index

if TYPE_CHECKING:
    import torch

_PICKLE_PROTOCOL_2 = b"\x80\x02"    # how the legacy torch.save format starts
_REFUSED = (re.compile(r"GLOBAL ([\w.]+)"), re.compile(r"Unsupported global: ([\w.]+)"))


class TorchCheckpoint(Checkpoint):
    """State dicts loaded with mmap: shapes and dtypes are known, the data stays on disk."""

    def __init__(self, path: Path, state: dict[str, Any], files: dict[str, Path], metadata: dict[str, Any]):
        infos = {name: _info(name, tensor, files[name]) for name, tensor in state.items()}
        super().__init__(path, "torch", infos, metadata)
        self._state = state

    def load(self, name: str) -> torch.Tensor:
        self.infos[name]  # KeyError for an unknown name, as in the other readers
        return self._state[name]

    def close(self) -> None:
        self._state = {}


def _info(name: str, tensor: Any, file: Path) -> TensorInfo:
    return TensorInfo(name, tuple(tensor.shape), torch_dtype_name(tensor.dtype),
                      tensor.numel() * tensor.element_size(), file)


def load_state_dict(path: Path) -> dict[str, Any]:
    """``torch.load`` the safe way, turning every failure into a one-line CheckpointError."""
    import pickle

    import torch

    _check_container(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(path, f"pickle holds something other than tensors ({_refused(error)}); "
                                    "refused without running it (weights_only)") from None
    except Exception as error:  # torch raises RuntimeError / ValueError / EOFError for damaged archives
        raise CheckpointError(path, f"cannot read torch checkpoint: {one_line(error)}") from None
    return _check_tensors(path, state)


def _check_container(path: Path) -> None:
    with open(path, "rb") as file:
        head = file.read(4)
    try:
        if zipfile.is_zipfile(path):
            return
    except zipfile.BadZipFile as error:   # is_zipfile lets some damaged end records through as errors
        raise CheckpointError(path, f"zip archive is corrupt: {one_line(error)}") from None
    if head.startswith(_PICKLE_PROTOCOL_2):
        raise CheckpointError(path, "legacy (pre-1.6, non-zip) torch.save format cannot be read safely "
                                    "with mmap; re-save it with a current torch or as safetensors")
    if head.startswith(b"PK"):
        raise CheckpointError(path, "zip archive is truncated or corrupt (no central directory)")
    raise CheckpointError(path, "not a torch checkpoint (neither a torch.save zip archive nor a pickle)")


def _refused(error: Exception) -> str:
    """torch's message spans paragraphs; the refused global (``posix.system``) is what matters."""
    for pattern in _REFUSED:
        match = pattern.search(str(error))
        if match:
            return f"unsupported global {match.group(1)}"
    return one_line(error)


def _check_tensors(path: Path, state: Any) -> dict[str, Any]:
    import torch

    if not isinstance(state, dict):
        raise CheckpointError(path, f"pickle holds a {type(state).__name__}, not a dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"pickle entry {key!r} is a {type(value).__name__}, not a tensor; "
                                        "only a flat dict of tensors is read")
    return state


def open_torch(path: Path) -> TorchCheckpoint:
    state = load_state_dict(path)
    return TorchCheckpoint(path, state, dict.fromkeys(state, path), {})


def open_torch_index(path: Path, index: ShardIndex | None = None) -> TorchCheckpoint:
    index = index or read_index(path)
    state: dict[str, Any] = {}
    for shard in index.shards:
        shard_state = load_state_dict(shard)
        check_keys_present(index, shard, shard_state)
        state.update({name: shard_state[name] for name in index.names_in(shard)})
    ordered = {name: state[name] for name in index.weight_map}
    return TorchCheckpoint(path, ordered, index.weight_map, dict(index.metadata))
