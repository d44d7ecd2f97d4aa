"""What the README promises about every command: each verb that takes a MODEL accepts --download and
hands it to the hub resolver; a missing llama-cpp-python fails the README's test command instead of
skipping the parity tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmkit.errors import VlmkitError

REPO = Path(__file__).resolve().parents[1]

# verb -> arguments after the MODEL (the options each verb requires)
MODEL_VERBS = {
    ("inspect",): [],
    ("convert",): ["--out", "unused-out"],
    ("run",): ["--prompt", "hi"],
    ("demo", "score"): [],
    ("diff",): ["./unused-b"],      # A is the hub id; B is never reached
    ("serve",): ["--dry-run"],
}


@pytest.mark.parametrize("verb", list(MODEL_VERBS), ids=" ".join)
def test_every_model_verb_passes_download_to_the_hub(verb, monkeypatch, tmp_path) -> None:
    from vlmkit import hub
    from vlmkit.cli import _register, app

    asked = []

    def from_hub(repo_id, *, download, revision):
        asked.append((repo_id, download))
        raise VlmkitError(repo_id, "stopped by the test before any network access")

    monkeypatch.setattr(hub, "_from_hub", from_hub)
    monkeypatch.chdir(tmp_path)
    _register()
    result = CliRunner().invoke(app, [*verb, "someone/some-model", *MODEL_VERBS[verb], "--download"])
    assert isinstance(result.exception, VlmkitError), result.output
    assert asked == [("someone/some-model", True)]


def test_missing_llama_cpp_fails_the_parity_tests(tmp_path: Path) -> None:
    """With llama_cpp unimportable, pytest (the README's test command) must fail, not skip."""
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('llama-cpp-python is not installed (test stand-in)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])}
    files = ["tests/test_convert_gguf.py", "tests/test_convert_quant.py", "tests/test_run_llamacpp.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *files], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout[-2000:]
    assert "llama-cpp-python is not installed (test stand-in)" in result.stdout + result.stderr
    assert "skipped" not in result.stdout.splitlines()[-1]
