"""Rough edges a new user meets in the first hour (issue 14, deliverable 6), one test each."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import vlmkit
from vlmkit.cli import _register, app
from vlmkit.errors import VlmkitError

_register()


def cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, input=stdin)


@pytest.mark.llamacpp
def test_overwrite_replaces_the_whole_output(tmp_path):
    from vlmkit.convert import convert

    out = tmp_path / "out"
    convert("zoo:llava-clip", out, dtype="f32", verify=False)
    assert (out / "mmproj.gguf").is_file()
    with pytest.raises(VlmkitError, match="not empty \\(use --overwrite\\)"):
        convert("zoo:llama", out, dtype="f32", verify=False)
    convert("zoo:llama", out, dtype="f32", verify=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf"]   # the stale mmproj is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp dirs left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VlmkitError, match="holds more than GGUF files \\(notes.txt\\)"):
        convert("zoo:llama", out, dtype="f32", verify=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.llamacpp
def test_model_and_mmproj_from_different_conversions_refused(tmp_path):
    from vlmkit.convert import convert

    convert("zoo:llava-clip", tmp_path / "a", dtype="f32", verify=False)
    convert("zoo:llava-clip", tmp_path / "b", dtype="f16", verify=False)
    with vlmkit.load(tmp_path / "a"):   # a matching pair loads
        pass
    shutil.copy(tmp_path / "b" / "mmproj.gguf", tmp_path / "a" / "mmproj.gguf")
    with pytest.raises(VlmkitError, match="comes from another conversion than model.gguf"):
        vlmkit.load(tmp_path / "a")
    proc = cli("run", str(tmp_path / "a"), "-p", "hi")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "another conversion" in proc.stderr
