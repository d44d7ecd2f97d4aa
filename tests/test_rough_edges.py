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
    with pytest.raises(VlmkitError, match="holds other files \\(notes.txt\\)"):
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


def llama_without_final_norm(zoo, tmp_path):
    """zoo:llama minus ``model.norm.weight``: it converts, transformers loads it (initialising the norm),
    llama.cpp refuses to load the GGUF."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "llama-no-norm"
    shutil.copytree(zoo("llama"), model)
    tensors = load_file(model / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    return model


@pytest.mark.llamacpp
def test_convert_keeps_its_output_when_a_check_crashes(zoo, tmp_path):
    model = llama_without_final_norm(zoo, tmp_path)
    proc = cli("convert", str(model), "--out", str(tmp_path / "out"), "--dtype", "f32")
    assert proc.returncode == 2, proc.stderr
    assert (tmp_path / "out" / "model.gguf").is_file()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and ".tmp-" not in proc.stderr
    assert lines[0].startswith("warning: the parity check") and "could not run: ValueError: Failed to load model" \
        in lines[0] and lines[0].endswith(f"the GGUF is written to {tmp_path / 'out'} (unchecked)")
    proc = cli("convert", str(model), "--out", str(tmp_path / "out2"), "--dtype", "f32", "--json")
    import json

    assert proc.returncode == 2 and "could not run" in json.loads(proc.stdout)["verify_error"]
