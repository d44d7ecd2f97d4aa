"""Lazy checkpoint readers behind one API: ``open_checkpoint(path) -> Checkpoint``.

Opening reads only what describes the tensors (headers, the pickle's tensor table, GGUF KV and
tensor infos) and validates it; ``Checkpoint.load(name)`` reads one tensor's data as torch, and the
streaming calls writers use (``read`` / ``iter_rows`` / ``copy_into``: plain reads, no memory map kept)
give numpy arrays, row blocks and byte-range copies. Every consumer (inspect, convert, run, diff)
takes its ``Checkpoint`` from here, so every verb refuses the same bad input the same way: one-line
``CheckpointError`` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import Checkpoint, TensorInfo

__all__ = ["Checkpoint", "CheckpointError", "TensorInfo", "find_weights", "open_checkpoint"]

_TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint directory or file.

    A directory is searched in this order: a ``*.safetensors.index.json``, ``*.safetensors`` files,
    ``pytorch_model.bin.index.json``, ``pytorch_model.bin``, one ``*.gguf`` (an ``mmproj*.gguf``
    beside the model is left for the GGUF tools), one ``*.npz``. A directory with none of these
    whose sub-folders hold checkpoints (VILA-1.5's ``llm/``, ``vision_tower/``, ``mm_projector/``)
    opens as their union, tensors named ``<subfolder>.<name>``.
    """
    path = Path(path)
    if path.is_file():
        return _open_file([path], directory=None)
    if not path.is_dir():
        raise CheckpointError(path, "no such file or directory")
    files = find_weights(path)
    if files:
        return _open_file(files, directory=path)
    subfolders = [sub for sub in sorted(path.iterdir())
                  if sub.is_dir() and not sub.name.startswith(".") and find_weights(sub)]
    if subfolders:
        from vlmkit.readers.composite import SubfolderCheckpoint

        return SubfolderCheckpoint(path, {f"{sub.name}.": open_checkpoint(sub) for sub in subfolders})
    raise CheckpointError(path, "no checkpoint found (no *.safetensors, pytorch_model.bin, *.gguf or *.npz, "
                                "nor sub-folders holding them)")


def find_weights(directory: Path) -> list[Path]:
    """The weight file(s) a directory's checkpoint consists of (an index counts as one file); [] if none."""
    for pattern in ("*.safetensors.index.json", "*.safetensors"):
        found = sorted(directory.glob(pattern))
        if found:
            preferred = "model.safetensors.index.json" if pattern.endswith("json") else "model.safetensors"
            return _prefer(found, preferred, several_ok=not pattern.endswith("json"))
    for name in ("pytorch_model.bin.index.json", "pytorch_model.bin"):
        if (directory / name).is_file():
            return [directory / name]
    ggufs = sorted(directory.glob("*.gguf"))
    ggufs = [p for p in ggufs if not p.name.startswith("mmproj")] or ggufs
    npzs = sorted(directory.glob("*.npz"))
    for found, kind in ((ggufs, "GGUF"), (npzs, ".npz")):
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise CheckpointError(directory, f"several {kind} files ({names}); name the one to open")
        if found:
            return found
    return []


def _prefer(found: list[Path], name: str, several_ok: bool) -> list[Path]:
    """``name`` when present (a directory may also hold adapters or a consolidated copy), else all
    files when they may be combined, else the only one."""
    chosen = [p for p in found if p.name == name]
    if chosen or several_ok or len(found) == 1:
        return chosen or found
    raise CheckpointError(found[0].parent, f"several safetensors indexes ({', '.join(p.name for p in found)}); "
                                           "name the one to open")


def _open_file(files: list[Path], directory: Path | None) -> Checkpoint:
    from vlmkit.readers import gguf_reader, npz_reader, safetensors_reader, torch_reader

    first = files[0]
    name = first.name.lower()
    label = directory or first
    if name.endswith(".index.json"):
        return _open_index(first, label)
    if name.endswith(".safetensors"):
        if len(files) == 1:
            return _relabel(safetensors_reader.open_safetensors(first), label)
        return safetensors_reader.open_safetensors_files(label, files)
    if name.endswith(_TORCH_SUFFIXES):
        return _relabel(torch_reader.open_torch(first), label)
    if name.endswith(".gguf"):
        return _relabel(gguf_reader.open_gguf(first), label)
    if name.endswith(".npz"):
        return _relabel(npz_reader.open_npz(first), label)
    raise CheckpointError(first, "unknown checkpoint format (expected .safetensors, .index.json, .bin/.pt/.pth, "
                                 ".gguf or .npz)")


def _open_index(index_path: Path, label: Path) -> Checkpoint:
    from vlmkit.readers import safetensors_reader, torch_reader
    from vlmkit.readers.index import read_index

    index = read_index(index_path)
    suffixes = {p.name.lower() for p in index.shards}
    if all(s.endswith(".safetensors") for s in suffixes):
        return _relabel(safetensors_reader.open_safetensors_index(index_path, index), label)
    if all(s.endswith(_TORCH_SUFFIXES) for s in suffixes):
        return _relabel(torch_reader.open_torch_index(index_path, index), label)
    raise CheckpointError(index_path, "weight_map shards are neither all .safetensors nor all torch .bin files")


def _relabel(checkpoint: Checkpoint, path: Path) -> Checkpoint:
    """``Checkpoint.path`` is what the user named (the directory), not the file found in it."""
    checkpoint.path = path
    return checkpoint
