"""Every zoo llava / llama / gpt_neox / VILA replica quantizes with no model-specific code, and its
compressed-tensors export reloads in stock transformers (CPU) with logits equal to vlmkit's own
dequantized forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlmkit.quant.calibration import FINGERPRINT_FILE
from vlmkit.quant.pipeline import quantize
from vlmkit.runtime.transformers_backend import model_class

CASES = [("llava-calm2-siglip", "gptq", {}), ("llava-clip", "awq", {}), ("llama", "gptq", {}),
         ("llama", "awq", {"symmetric": False}), ("llava-clip", "gptq", {"symmetric": False, "act_order": True}),
         ("opencalm", "awq", {"awq_clip": True}), ("vila", "rtn", {})]


def reload_logits_match(out: Path, result) -> None:
    lm = out / "llm" if (out / "llm" / "config.json").is_file() else out
    auto_class, _ = model_class(lm)
    model = auto_class.from_pretrained(lm, dtype=torch.float32).eval()
    assert result.logits
    for pairs in result.logits.values():
        for inputs, ours in pairs:
            with torch.no_grad():
                theirs = model(**inputs).logits[0]
            torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,method,options", CASES)
def test_zoo_model_quantizes_and_reloads_in_transformers(zoo, tmp_path: Path, name: str, method: str,
                                                         options: dict) -> None:
    out = tmp_path / "q"
    result = quantize(zoo(name), out, method=method, bits=4, group_size=128, calib="demo", samples=6,
                      held_out=3, progress=False, keep_logits=True, **options)
    reload_logits_match(out, result)
    lm = out / "llm" if name == "vila" else out
    config = json.loads((lm / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["strategy"]) == (4, 128, "group")
    assert result.quantized and all(".layers." in n for n in result.quantized)
    reasons = set(result.kept.values())
    if name.startswith("llava"):  # the tower is in `ignore` as transformers 5 builds it and as on disk
        assert any(n.startswith("model.vision_tower.") for n in config["ignore"])
        assert any(n.startswith("vision_tower.vision_model.") for n in config["ignore"])
        assert "vision tower kept at source precision (default)" in reasons
        assert "projector kept at source precision (default)" in reasons
    fingerprints = json.loads((out / FINGERPRINT_FILE).read_text())
    assert fingerprints["n_samples"] == 6 and len(fingerprints["sample_hashes"][0]["text_sha256"]) == 64
    assert all(q["mean_kld"] > 0 for q in result.quality.values())
    assert all(0 < layer["relative_error"] < 0.5 for layer in result.layers)


def test_width_the_group_does_not_divide_falls_back_to_channel(zoo, tmp_path: Path) -> None:
    """256- and 512-wide Linears at group size 96: per-channel scales for each, stated, and the export
    (one config group per strategy, explicit targets) still reloads exactly."""
    out = tmp_path / "q"
    result = quantize(zoo("llama"), out, method="rtn", bits=4, group_size=96, calib="demo", samples=4,
                      held_out=2, progress=False, keep_logits=True, exclude=(r"down_proj",))
    assert all(layer["group_size"] == 0 for layer in result.layers)
    assert all("not divisible by group size 96: per-channel scales (fallback)" in why
               for why in result.quantized.values())
    assert all("down_proj" not in n for n in result.quantized)
    assert result.kept["model.layers.0.mlp.down_proj"] == "--exclude"
    reload_logits_match(out, result)


def test_mixed_group_sizes_reload(zoo, tmp_path: Path) -> None:
    """Group 128 for the 256-wide Linears and the per-channel fallback for none: 512-wide down_proj divides
    too, so force a mix with group 512: q/k/v/o/gate/up (256 wide) fall back, down_proj (512) keeps 512."""
    out = tmp_path / "q"
    result = quantize(zoo("llama"), out, method="gptq", bits=4, group_size=512, calib="demo", samples=4,
                      held_out=2, progress=False, keep_logits=True)
    sizes = {layer["name"].split(".")[-1]: layer["group_size"] for layer in result.layers}
    assert sizes["down_proj"] == 512 and sizes["q_proj"] == 0
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert len(config["config_groups"]) == 2
    reload_logits_match(out, result)


def test_calibration_record_is_what_eval_reads(zoo, tmp_path: Path) -> None:
    """`vlmkit eval vqa` finds the quantized model's calibration questions in its record (vlmkit.data.calibration)."""
    from vlmkit.data.calibration import overlap
    from vlmkit.quant.calibration import load_samples

    out = tmp_path / "q"
    quantize(zoo("llava-calm2-siglip"), out, method="rtn", calib="demo", samples=6, held_out=3, progress=False)
    calib, held = load_samples("demo", 6, 3)
    assert overlap(out, [(s.image, s.text) for s in calib])["overlapping"] == 6
    assert overlap(out, [(s.image, s.text) for s in held])["overlapping"] == 0
