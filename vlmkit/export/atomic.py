"""Outputs that appear whole or not at all: write into a temporary sibling, rename at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmkit.errors import VlmkitError


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool = False, what: str = "") -> Iterator[Path]:
    """Yield a temporary directory whose files move into ``out_dir`` when the block ends without error
    (a rename of the whole directory when ``out_dir`` does not exist yet)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise VlmkitError(out_dir, f"--out must be a directory {what}".rstrip())
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise VlmkitError(out_dir, "output directory exists and is not empty (use --overwrite)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary directory
    try:
        yield tmp
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    for item in tmp.iterdir():
        target = out_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()


@contextmanager
def atomic_file(out_file: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``out_file`` when the block ends without error."""
    if out_file.exists() and not overwrite:
        raise VlmkitError(out_file, "output file exists (use --overwrite)")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out_file.name}.tmp-", dir=out_file.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
