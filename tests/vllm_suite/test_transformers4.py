"""The same HF files in transformers 4.x (own venv: `.ci/transformers4-env`, path in $VLMKIT_TRANSFORMERS4_PYTHON):
the layout vlmkit writes loads completely with the logits transformers 5 gives; the layout transformers 5 saves for
a LLaVA it built from a config leaves transformers 4's vision tower unloaded — why `convert --to hf` exists.
Runs with the vLLM suite (`-m vllm`), the other suite that needs its own environments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.vllm

LOADER = Path(__file__).with_name("transformers4_load.py")


def transformers4_python() -> str:
    python = os.environ.get("VLMKIT_TRANSFORMERS4_PYTHON", "/work/venvs/transformers4/bin/python")
    assert Path(python).is_file(), f"no transformers 4 python at {python}: run .ci/transformers4-env"
    return python


def load_in_transformers4(folder: Path, inputs: Path, tmp_path: Path) -> tuple[dict, np.ndarray]:
    out = tmp_path / f"{folder.name}-logits.npy"
    done = subprocess.run([transformers4_python(), str(LOADER), str(folder), str(inputs), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)


def test_vlmkit_layout_loads_in_transformers4_and_5_with_equal_logits(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlmkit.convert import convert
    from vlmkit.demo.dataset import make_split
    from vlmkit.hub import resolve_model

    demo = resolve_model("demo")
    saved_by_tf5 = tmp_path / "demo-tf5"  # the names transformers 5 writes for a model built from a config
    shutil.copytree(demo, saved_by_tf5)
    tensors = load_file(str(demo / "model.safetensors"))
    save_file({k.replace("vision_tower.vision_model.", "vision_tower."): v for k, v in tensors.items()},
              str(saved_by_tf5 / "model.safetensors"), metadata={"format": "pt"})
    fixed = tmp_path / "demo-fixed"
    convert(saved_by_tf5, fixed, to="hf")

    item = make_split("test", 1)[0]
    inputs = AutoProcessor.from_pretrained(fixed)(images=item.image, return_tensors="pt",
                                                  text="USER: <image>\nWhat color is the square?\nASSISTANT:")
    np.savez(tmp_path / "inputs.npz", input_ids=inputs.input_ids.numpy(), pixel_values=inputs.pixel_values.numpy())
    with torch.inference_mode():
        reference = LlavaForConditionalGeneration.from_pretrained(fixed)(**inputs).logits[0].numpy()

    info, logits = load_in_transformers4(fixed, tmp_path / "inputs.npz", tmp_path)
    assert info == {}  # nothing missing, unexpected or mismatched
    np.testing.assert_allclose(logits, reference, atol=1e-5)

    info, _ = load_in_transformers4(saved_by_tf5, tmp_path / "inputs.npz", tmp_path)
    assert any(k.startswith("model.vision_tower.vision_model.") for k in info["missing_keys"])
    assert any(k.startswith("model.vision_tower.embeddings.") for k in info["unexpected_keys"])
