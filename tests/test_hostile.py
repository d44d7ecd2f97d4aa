"""Every verb refuses the bad-input corpus (tests/hostile.py) with one line naming the file and the fault,
runs nothing from the checkpoint and leaves nothing where its output would go.

The verbs run as the user runs them: ``python -m vlmkit ...`` in a subprocess (exit status, stderr).
A new verb joins with one entry in ``VERBS``: its arguments after ``vlmkit``, given MODEL and OUT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostile import CASES, HostileCase

REPO = Path(__file__).resolve().parents[1]

VERBS = {
    "inspect": lambda model, out: ["inspect", model],
    "convert": lambda model, out: ["convert", model, "--out", out, "--no-verify"],
    "run": lambda model, out: ["run", model, "--prompt", "hi", "--max-new-tokens", "2"],
    "diff": lambda model, out: ["diff", model, model, "--report", out],
    "eval": lambda model, out: ["eval", "vqa", model, "--limit", "1", "--out", out],
    "serve": lambda model, out: ["serve", model, "--dry-run"],
    "quantize": lambda model, out: ["quantize", model, "--samples", "2", "--held-out", "1", "--out", out],
}


def vlmkit(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verb_refuses_hostile_input(tmp_path: Path, case: HostileCase, verb: str) -> None:
    root = tmp_path / "case"
    root.mkdir()
    model = case.build(root)
    before = snapshot(root)
    out = tmp_path / "out"
    result = vlmkit(VERBS[verb](str(model), str(out)))
    assert not list(root.glob("ran-*")), "code from the checkpoint ran"
    assert snapshot(root) == before, "the checkpoint was changed"
    assert not list(tmp_path.glob(".out.tmp-*")), "a temporary output was left behind"
    if verb not in case.refused_by:   # e.g. inspect / diff of a checkpoint whose template is hostile: never run
        return
    assert not out.exists(), "something was written"
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("error: ") and case.fault in lines[0] and case.file in lines[0], lines[0]
