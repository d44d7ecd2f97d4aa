"""Faults during convert leave no partial output and no staging directory, with one line on stderr:
SIGINT / SIGTERM in the middle of writing, a full disk (RLIMIT_FSIZE), and the leftovers of a
conversion that was killed outright (cleaned up by the next run)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs the CLI with the tensor writer paused inside the first tensor: the test signals while the
# conversion is provably half way (``ready`` exists), not after a guessed delay.
PAUSED_CONVERT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vlmkit.gguf import writer

    ready, original = Path(sys.argv[1]), writer.LazyTensor.tofile
    def paused(self, fout):
        original(self, fout)
        ready.touch()
        time.sleep(120)
    writer.LazyTensor.tofile = paused
    sys.argv = ["vlmkit", *sys.argv[2:]]
    from vlmkit.cli import main
    main()
""")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), list(out.parent.iterdir())


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_convert_leaves_nothing(zoo, tmp_path: Path, signum: int) -> None:
    model, out, ready = zoo("llama"), tmp_path / "out", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", PAUSED_CONVERT, str(ready), "convert", str(model),
                              "--out", str(out), "--no-verify"], env=env(), stderr=subprocess.PIPE, text=True)
    try:
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.tmp-*"))      # the staging directory exists mid-conversion
        child.send_signal(signum)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 1
    assert f"interrupted by {signal.Signals(signum).name}; nothing was written" in one_error_line(stderr)
    assert_nothing_written(tmp_path, out)


def limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG from write() instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def test_full_disk_leaves_nothing(zoo, tmp_path: Path) -> None:
    model, out = zoo("llama"), tmp_path / "out"
    assert sum(f.stat().st_size for f in model.glob("*.safetensors")) > 256 << 10   # output cannot fit
    result = subprocess.run([sys.executable, "-m", "vlmkit", "convert", str(model), "--out", str(out),
                             "--dtype", "f32", "--no-verify"], env=env(), capture_output=True, text=True,
                            preexec_fn=limit_file_size, timeout=300)
    assert result.returncode == 1
    assert "File too large while writing; nothing was written" in one_error_line(result.stderr)
    assert_nothing_written(tmp_path, out)


def test_next_run_removes_a_killed_conversions_leftovers(zoo, tmp_path: Path) -> None:
    from vlmkit.convert import convert

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead = tmp_path / f".out.tmp-{int(finished.stdout)}-abc123"          # a SIGKILLed conversion's staging dir
    live = tmp_path / f".out.tmp-{os.getpid()}-def456"                   # a conversion still running
    for leftover in (dead, live):
        leftover.mkdir()
        (leftover / "model.gguf").write_bytes(b"partial")
    convert(zoo("llama"), tmp_path / "out", dtype="f32", verify=False)
    assert not dead.exists() and live.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.gguf"]


# Quantize paused inside its block loop, long before its output is staged: the signal handling must cover
# the whole run, not only the final write.
PAUSED_QUANTIZE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from vlmkit.quant import pipeline

    ready = Path(sys.argv[1])
    def paused(*args, **kwargs):
        ready.touch()
        time.sleep(120)
    pipeline._run_blocks = paused
    sys.argv = ["vlmkit", *sys.argv[2:]]
    from vlmkit.cli import main
    main()
""")


def test_sigterm_during_quantize_leaves_nothing(zoo, tmp_path: Path) -> None:
    model, out, ready = zoo("llama"), tmp_path / "out", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", PAUSED_QUANTIZE, str(ready), "quantize", str(model),
                              "--samples", "2", "--held-out", "1", "--out", str(out)], env=env(),
                             stderr=subprocess.PIPE, text=True)
    try:
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 1
    assert "interrupted by SIGTERM; nothing was written" in stderr.strip().splitlines()[-1], stderr
    assert_nothing_written(tmp_path, out)


def test_sigint_during_quantizes_gguf_export_names_the_users_output(zoo, tmp_path: Path) -> None:
    """quantize writes its GGUF through convert into a staging folder; the one line names `--out`, not that folder."""
    model, out, ready = zoo("llama"), tmp_path / "out", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", PAUSED_CONVERT, str(ready), "quantize", str(model), "--samples",
                              "2", "--held-out", "1", "--format", "gguf", "--out", str(out)], env=env(),
                             stderr=subprocess.PIPE, text=True)
    try:
        while not ready.exists():
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 1
    assert stderr.strip().splitlines()[-1] == f"error: {out}: interrupted by SIGINT; nothing was written", stderr
    assert_nothing_written(tmp_path, out)
    assert not list(tmp_path.glob(".vlmkit-*")) and not list(tmp_path.glob(".out.*")), list(tmp_path.iterdir())
