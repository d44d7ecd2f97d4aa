"""Run the vlmkit CLI in a fresh interpreter and list the modules it imported: how the tests check that a
path never imports torch (its import alone costs seconds and hundreds of MB on the paths that avoid it)."""

from __future__ import annotations

import json
import subprocess
import sys

_RUN_THEN_MODULES = """
import json, runpy, sys
sys.argv = ["vlmkit", *sys.argv[1:]]
try:
    runpy.run_module("vlmkit", run_name="__main__", alter_sys=True)
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))))
"""


def vlmkit_modules(*args: str) -> tuple[list[str], list[str]]:
    """``vlmkit ARGS`` in a subprocess (it must succeed): its stdout lines, and the torch / transformers
    modules it imported."""
    done = subprocess.run([sys.executable, "-c", _RUN_THEN_MODULES, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    return lines[:-1], json.loads(lines[-1])
