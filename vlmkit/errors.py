"""User-facing errors: one line that names the file and what is wrong.

The CLI prints ``str(error)`` and exits non-zero without a traceback; library callers can catch
``VlmkitError`` (or a subclass) and read ``.path`` / ``.reason``.
"""

from __future__ import annotations

import errno
from pathlib import Path

# A write that failed for lack of space (a full disk, a quota, a file-size limit): the output's fault.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class VlmkitError(Exception):
    """A fault in the user's input or environment, reported as ``<path>: <reason>``."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class CheckpointError(VlmkitError):
    """A checkpoint file is malformed (truncated, bad header, bad offsets, unsafe pickle ...)."""


class UnsupportedError(VlmkitError):
    """The input is valid but vlmkit does not handle it (architecture, dtype, backend ...)."""


def error_summary(error: BaseException) -> str:
    """A library's error in one line: its first line, and the next one too when the first only
    announces it ("Class validation error for validator 'validate_architecture':")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]
