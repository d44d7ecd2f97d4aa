"""Outputs appear atomically: written into a temporary directory beside the target, renamed at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmkit.errors import VlmkitError


@contextmanager
def publish_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise VlmkitError(out, "output exists and is not an empty directory (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
