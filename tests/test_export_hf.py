"""HF exports every HF runtime loads: the llava family's name rule, `convert --to hf`, and inspect's flag.

A LLaVA that transformers 5 saves (``save_pretrained``) names its SigLIP tower ``vision_tower.embeddings...``,
which vLLM refuses; the rewritten checkpoint must load in transformers with identical outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from vlmkit.convert import convert
from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.families.llava import export_name
from vlmkit.hub import resolve_model
from vlmkit.inspect import inspect_model

SIGLIP = {"vision_config": {"model_type": "siglip_vision_model"}}
PIXTRAL = {"vision_config": {"model_type": "pixtral"}}


@pytest.mark.parametrize("name, expected", [
    ("vision_tower.embeddings.patch_embedding.weight", "vision_tower.vision_model.embeddings.patch_embedding.weight"),
    ("vision_tower.vision_model.post_layernorm.bias", "vision_tower.vision_model.post_layernorm.bias"),
    ("model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
     "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
    ("model.vision_tower.encoder.layers.0.mlp.fc1.weight", "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
    ("model.language_model.layers.1.self_attn.q_proj.weight", "language_model.model.layers.1.self_attn.q_proj.weight"),
    ("language_model.model.norm.weight", "language_model.model.norm.weight"),
    ("lm_head.weight", "language_model.lm_head.weight"),
    ("model.multi_modal_projector.linear_1.bias", "multi_modal_projector.linear_1.bias"),
])
def test_llava_export_name_rule(name, expected):
    assert export_name(name, SIGLIP) == expected
    assert export_name(expected, SIGLIP) == expected  # idempotent


def test_unwrapped_towers_keep_their_names():
    assert export_name("vision_tower.transformer.layers.0.attention.q_proj.weight", PIXTRAL) == \
        "vision_tower.transformer.layers.0.attention.q_proj.weight"


@pytest.fixture(scope="module")
def saved_by_transformers5(tmp_path_factory):
    """The demo VLM as transformers 5 saves a model it built from a config (what training scripts do): the
    layout vLLM refuses. (A model loaded from the hub layout is saved back in that layout.)"""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    out = tmp_path_factory.mktemp("tf5") / "demo-tf5"
    demo = resolve_model("demo")
    shutil.copytree(demo, out)
    (out / "model.safetensors").unlink()
    built = LlavaForConditionalGeneration(LlavaConfig.from_pretrained(demo))
    built.load_state_dict(LlavaForConditionalGeneration.from_pretrained(demo).state_dict())
    built.save_pretrained(out)
    return out


def tensor_names(folder):
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return set(handle.keys())


def test_transformers5_writes_the_refused_layout_and_inspect_flags_it(saved_by_transformers5):
    assert any(n.startswith("vision_tower.embeddings.") for n in tensor_names(saved_by_transformers5))
    report = inspect_model(saved_by_transformers5)
    assert report.layout_faults == {"vision_tower.": "vision_tower.vision_model."}
    assert inspect_model("demo").layout_faults == {}  # the shipped demo is written under the rule


def test_convert_to_hf_rewrites_names_and_transformers_loads_it_identically(saved_by_transformers5, tmp_path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from vlmkit.demo.dataset import make_split

    result = convert(saved_by_transformers5, tmp_path / "fixed", to="hf")
    fixed = tmp_path / "fixed"
    assert result.layout == "vision_tower.* -> vision_tower.vision_model.*" and result.direction == "hf -> hf"
    assert inspect_model(fixed).layout_faults == {}
    assert all(not n.startswith("vision_tower.") or n.startswith("vision_tower.vision_model.")
               for n in tensor_names(fixed))
    assert {p.name for p in saved_by_transformers5.iterdir()} == {p.name for p in fixed.iterdir()}
    item = make_split("test", 1)[0]
    processor = AutoProcessor.from_pretrained(fixed)
    inputs = processor(images=item.image, text="USER: <image>\nWhat color is the square?\nASSISTANT:",
                       return_tensors="pt")
    logits = []
    for folder in (saved_by_transformers5, fixed):
        model, info = LlavaForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
        assert not any(info.values()), info  # nothing missing, unexpected or mismatched
        with torch.inference_mode():
            logits.append(model(**inputs).logits)
    assert torch.equal(logits[0], logits[1])


def test_convert_to_hf_refuses_cleanly_and_writes_nothing(saved_by_transformers5, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    with pytest.raises(VlmkitError, match="not empty"):
        convert(saved_by_transformers5, tmp_path / "taken", to="hf")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["x"]
    with pytest.raises(UnsupportedError, match="keeps every tensor's dtype"):
        convert(saved_by_transformers5, tmp_path / "new", to="hf", dtype="q4_0")
    with pytest.raises(UnsupportedError, match="--to onnx from a hf checkpoint is not supported"):
        convert(saved_by_transformers5, tmp_path / "new", to="onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary directory left


def test_convert_to_hf_cli_json(saved_by_transformers5, tmp_path):
    done = subprocess.run([sys.executable, "-m", "vlmkit", "convert", str(saved_by_transformers5), "--to", "hf",
                           "--out", str(tmp_path / "o"), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["layout"] == "vision_tower.* -> vision_tower.vision_model.*"
    shown = subprocess.run([sys.executable, "-m", "vlmkit", "inspect", str(saved_by_transformers5)],
                           capture_output=True, text=True, check=True).stdout
    assert "--to hf" in shown and "vision_tower.vision_model." in shown
