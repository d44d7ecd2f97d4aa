"""The vLLM suite's W4A16 demo VLM: made once per run by `vlmkit quantize` as a user would (the deploy path,
quantize -> run / eval -> serve), in this venv (vLLM's pins: transformers 5.19, compressed-tensors 0.17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def w4a16_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo VLM, GPTQ W4A16 in groups of 128 (the language model's Linears; tower and projector kept)."""
    out = tmp_path_factory.mktemp("w4a16") / "demo-w4a16"
    done = subprocess.run([sys.executable, "-m", "vlmkit", "quantize", "demo", "--method", "gptq", "--bits", "4",
                           "--group-size", "128", "--samples", "8", "--held-out", "2", "--format", "hf",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (config["format"], config["config_groups"]["group_0"]["weights"]["group_size"]) == ("pack-quantized", 128)
    return out
