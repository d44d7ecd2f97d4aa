"""Outputs that appear whole or not at all: write into a temporary sibling, rename at the end.

On any failure, Ctrl-C, SIGTERM or a full disk the temporary sibling is removed and the error is one
line (``Interrupted`` / a VlmkitError naming the output). A process killed outright (SIGKILL, power cut)
cannot clean up: its temporary sibling carries the dead process's id in its name, and the next run
writing next to it removes it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmkit.errors import DISK_FULL_ERRNOS, VlmkitError


class Interrupted(VlmkitError):
    """SIGINT / SIGTERM arrived while an output was being written (nothing was left behind)."""


@contextmanager
def atomic_dir(out_dir: Path, overwrite: bool = False, what: str = "",
               replaceable_suffixes: tuple[str, ...] | None = None) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``out_dir`` as a whole when the block ends without error
    (nothing of an older output stays beside the new files: a stale mmproj.gguf must not outlive its model).

    ``replaceable_suffixes``: with --overwrite, an existing ``out_dir`` holding any other file is refused,
    so --overwrite never deletes someone's other work."""
    if out_dir.exists() and not out_dir.is_dir():
        raise VlmkitError(out_dir, f"--out must be a directory {what}".rstrip())
    if out_dir.exists() and any(out_dir.iterdir()):
        _check_replaceable(out_dir, overwrite, replaceable_suffixes)
    with _writable(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result is an ordinary directory
    try:
        with faults_in_one_line(out_dir):
            yield tmp
            _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def scratch_dir(out_dir: Path) -> Iterator[Path]:
    """A working directory beside ``out_dir`` (the output's disk, not a RAM-backed /tmp), named like the
    staging directory so that a killed run's leftovers are removed by the next run; removed at the end."""
    with _writable(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out_dir), dir=out_dir.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_replaceable(out_dir: Path, overwrite: bool, suffixes: tuple[str, ...] | None) -> None:
    if not overwrite:
        raise VlmkitError(out_dir, "output directory exists and is not empty (use --overwrite)")
    if suffixes is None:
        return
    others = sorted(p.name for p in out_dir.iterdir() if not (p.is_file() and p.suffix in suffixes))
    if others:
        raise VlmkitError(out_dir, f"--overwrite replaces the whole directory, which holds other files "
                                   f"({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}): choose another --out")


def _publish(tmp: Path, out_dir: Path) -> None:
    """A rename; an existing (checked) directory is swapped out first and then removed."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(out_file: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``out_file`` when the block ends without error."""
    if out_file.exists() and not overwrite:
        raise VlmkitError(out_file, "output file exists (use --overwrite)")
    with _writable(out_file):
        out_file.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out_file)
        handle, name = tempfile.mkstemp(prefix=_staging_prefix(out_file), dir=out_file.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        with faults_in_one_line(out_file):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _writable(out: Path) -> Iterator[None]:
    """An output place that cannot be created (``--out /proc/foo``, a read-only disk) in one line."""
    try:
        yield
    except OSError as error:
        raise VlmkitError(out, f"cannot write the output here: {error.strerror or error}") from None


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.tmp-{os.getpid()}-"


def remove_stale(out: Path) -> list[Path]:
    """Remove temporary siblings of ``out`` left by processes that no longer run."""
    pattern = re.compile(re.escape(f".{out.name}.tmp-") + r"(\d+)-")
    removed = []
    for candidate in out.parent.glob(f".{out.name}.tmp-*"):
        match = pattern.match(candidate.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(candidate, ignore_errors=True) if candidate.is_dir() else candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process: alive
        return True
    return True


_faults = threading.local()  # .active: a faults_in_one_line is already answering in this thread


@contextmanager
def faults_in_one_line(out: Path) -> Iterator[None]:
    """SIGINT / SIGTERM raise ``Interrupted`` (so the caller's cleanup runs; SIGTERM would otherwise kill
    the process on the spot) and a full disk becomes one line naming the output. Nested (``quantize`` runs
    ``convert`` into a staging folder), the outermost one answers: the line names the user's output."""
    if getattr(_faults, "active", False):
        yield
        return
    main = threading.current_thread() is threading.main_thread()

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(out, f"interrupted by {signal.Signals(signum).name}; nothing was written")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    _faults.active = True
    try:
        yield
    except OSError as error:
        if error.errno not in DISK_FULL_ERRNOS:
            raise
        raise VlmkitError(out, f"{os.strerror(error.errno)} while writing; nothing was written") from None
    finally:
        _faults.active = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
