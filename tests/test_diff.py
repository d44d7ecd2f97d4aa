"""``vlmkit diff``: a copy of a zoo model with known layers changed reports exactly those layers, also
across formats (big_vision npz vs HF, HF vs GGUF) and for a PEFT LoRA adapter (checked against PEFT's
own merge); the statistics against numpy's own formulas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import big_vision_reference as ref
from vlmkit.convert import convert
from vlmkit.diff import diff_checkpoints, module_kind
from vlmkit.metrics import tensor_diff

LM_Q1 = "language_model.model.layers.1.self_attn.q_proj.weight"
VIT_FC1_0 = "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"


def edited_copy(source: Path, out: Path, edit) -> dict[str, np.ndarray]:
    """Copy an HF folder and rewrite its model.safetensors through ``edit(tensors)``; returns the originals."""
    shutil.copytree(source, out)
    tensors = load_file(out / "model.safetensors")
    original = {k: v.copy() for k, v in tensors.items()}
    edit(tensors)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return original


def test_hf_vs_hf_reports_exactly_the_changed_layers(tmp_path, zoo):
    source = zoo("paligemma")

    def edit(t):
        t[LM_Q1] = t[LM_Q1] + 0.01
        t[VIT_FC1_0] = t[VIT_FC1_0] * 1.1
        t["extra.bias"] = np.zeros(3, np.float32)
        del t["multi_modal_projector.linear.bias"]
        t["language_model.model.norm.weight"] = t["language_model.model.norm.weight"][:-1]

    original = edited_copy(source, tmp_path / "ft", edit)
    report = diff_checkpoints(source, tmp_path / "ft")
    assert report.changed_layers() == {"language_model": [1], "vision_tower": [0]}
    assert report.counts() == {"unchanged": len(original) - 4, "changed": 2, "added": 1, "removed": 1, "reshaped": 1}
    by_name = {d.name: d for d in report.tensors}
    a = original[LM_Q1].astype(np.float64)
    b = (original[LM_Q1] + np.float32(0.01)).astype(np.float64)     # as stored: float32
    stats = by_name[LM_Q1].stats
    assert stats.rel_change == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(a), rel=1e-5)
    assert stats.max_abs == pytest.approx(0.01, rel=1e-4)
    assert stats.cosine == pytest.approx(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b), rel=1e-9)
    assert by_name["extra.bias"].status == "added"
    assert by_name["multi_modal_projector.linear.bias"].status == "removed"
    assert report.modules["q"].changed == 1 and report.modules["mlp"].changed == 1 and report.modules["k"].changed == 0


def test_big_vision_npz_vs_hf(tmp_path):
    cfg = ref.TinyPaliGemma()
    ref.save_npz(tmp_path / "pg.npz", ref.make_params(cfg), prefix="params/")
    convert(tmp_path / "pg.npz", tmp_path / "hf", to="hf")
    same = diff_checkpoints(tmp_path / "pg.npz", tmp_path / "hf")
    assert same.kinds == ("big_vision", "hf")
    assert set(same.counts()) == {"unchanged"} and same.counts()["unchanged"] == 59

    def edit(t):
        name = "language_model.model.layers.0.self_attn.k_proj.weight"
        t[name] = t[name] * 0.5

    edited_copy(tmp_path / "hf", tmp_path / "ft", edit)
    report = diff_checkpoints(tmp_path / "pg.npz", tmp_path / "ft")
    assert report.changed_layers() == {"vision_tower": [], "language_model": [0]}
    assert [d.name for d in report.tensors if d.status == "changed"] == [
        "language_model.model.layers.0.self_attn.k_proj.weight"]
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    k_names = [n for n in tensors if module_kind(n) == "k"]   # both towers' k_proj weights and biases
    changed_norm = 0.5 * np.linalg.norm(tensors["language_model.model.layers.0.self_attn.k_proj.weight"])
    pooled = np.sqrt(sum(np.linalg.norm(tensors[n].astype(np.float64)) ** 2 for n in k_names))
    assert report.modules["k"].rel_change == pytest.approx(changed_norm / pooled, rel=1e-6)


def test_lora_adapter_is_attributed_to_its_target_modules(tmp_path, zoo):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    source = zoo("paligemma")
    model = PaliGemmaForConditionalGeneration.from_pretrained(str(source))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=
                                                  r".*language_model.*layers\.1\.self_attn\.(q_proj|v_proj)"))
    torch.manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)      # a trained adapter: B is no longer zero
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    merged = peft_model.merge_and_unload().state_dict()
    base = PaliGemmaForConditionalGeneration.from_pretrained(str(source)).state_dict()

    report = diff_checkpoints(source, tmp_path / "adapter")
    assert report.kinds == ("hf", "lora")
    assert report.changed_layers() == {"language_model": [1], "vision_tower": []}
    changed = {d.name: d for d in report.tensors if d.status == "changed"}
    assert set(changed) == {LM_Q1, "language_model.model.layers.1.self_attn.v_proj.weight"}
    for name, diff in changed.items():
        in_memory = name.replace("language_model.model.", "model.language_model.")
        delta = (merged[in_memory] - base[in_memory]).double()
        assert np.sqrt(diff.stats.sq_diff) == pytest.approx(delta.norm().item(), rel=1e-5)
        assert diff.stats.max_abs == pytest.approx(delta.abs().max().item(), rel=1e-4)


def test_hf_vs_gguf_undoes_the_rope_permutation(tmp_path, zoo):
    source = zoo("llama")
    convert(source, tmp_path / "gguf", to="gguf", dtype="f32", verify=False)
    same = diff_checkpoints(source, tmp_path / "gguf" / "model.gguf")
    assert same.kinds == ("hf", "gguf")
    assert set(same.counts()) == {"unchanged"}     # q_proj / k_proj permuted back, bit for bit

    def edit(t):
        name = "model.layers.1.self_attn.k_proj.weight"
        t[name] = t[name] + 0.02

    edited_copy(source, tmp_path / "ft", edit)
    report = diff_checkpoints(tmp_path / "ft", tmp_path / "gguf" / "model.gguf")
    assert report.changed_layers() == {"language_model": [1]}
    assert [d.name for d in report.tensors if d.status == "changed"] == ["model.layers.1.self_attn.k_proj.weight"]
    assert report.tensors[0].stats is not None


@pytest.mark.llamacpp
def test_quantized_gguf_is_dequantized_and_tolerance_applies(tmp_path, zoo):
    source = zoo("llama")
    convert(source, tmp_path / "gguf", to="gguf", dtype="q8_0", verify=False)
    report = diff_checkpoints(source, tmp_path / "gguf" / "model.gguf")
    rel = [d.stats.rel_change for d in report.tensors if d.status == "changed"]
    assert len(rel) >= 10 and max(rel) < 1e-2          # Q8_0: ~0.5 % everywhere, no permutation left over
    norms = [d for d in report.tensors if module_kind(d.name) == "norm"]
    assert norms and all(d.status == "unchanged" for d in norms)   # kept f32
    assert set(diff_checkpoints(source, tmp_path / "gguf" / "model.gguf", tolerance=1e-2).counts()) == {"unchanged"}


def test_cli_json_plot_and_report(tmp_path, zoo):
    from typer.testing import CliRunner

    from vlmkit.cli import _register, app

    source = zoo("paligemma")

    def edit(t):
        t[LM_Q1] = t[LM_Q1] * 2

    edited_copy(source, tmp_path / "ft", edit)
    _register()
    result = CliRunner().invoke(app, ["diff", str(source), str(tmp_path / "ft"), "--json", "--plot",
                                      str(tmp_path / "h.png"), "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["changed_layers"] == {"language_model": [1], "vision_tower": []}
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert LM_Q1 in (tmp_path / "r.html").read_text()
    text = CliRunner().invoke(app, ["diff", str(source), str(tmp_path / "ft")])
    assert text.exit_code == 0 and "changed layers in language_model: 1" in text.output


def test_tensor_stats_match_numpy_across_blocks(monkeypatch):
    monkeypatch.setattr(tensor_diff, "_BLOCK", 7)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 9)).astype(np.float32)
    b = a + rng.standard_normal((5, 9)).astype(np.float32) * 0.1
    stats = tensor_diff.tensor_stats(a, b)
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    assert stats.rel_change == pytest.approx(np.linalg.norm(x - y) / np.linalg.norm(x), rel=1e-12)
    assert stats.max_abs == pytest.approx(np.abs(x - y).max(), rel=1e-12)
    assert stats.cosine == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-12)
    assert tensor_diff.verdict("t", a, a).status == "unchanged"
    assert tensor_diff.verdict("t", a, b, tolerance=1.0).status == "unchanged"
    assert tensor_diff.verdict("t", a, a[:2]).status == "reshaped"


@pytest.mark.parametrize("name,kind", [
    ("language_model.model.layers.3.self_attn.q_proj.weight", "q"),
    ("vision_tower.vision_model.encoder.layers.0.self_attn.out_proj.bias", "o"),
    ("gpt_neox.layers.0.attention.query_key_value.weight", "qkv"),
    ("model.layers.0.mlp.down_proj.weight", "mlp"),
    ("model.layers.0.post_attention_layernorm.weight", "norm"),
    ("model.embed_tokens.weight", "embedding"),
    ("multi_modal_projector.linear.weight", "projector"),
    ("lm_head.weight", "head"),
])
def test_module_kinds(name, kind):
    assert module_kind(name) == kind
