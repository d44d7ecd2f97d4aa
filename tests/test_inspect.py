"""`vlmkit inspect` against transformers: exact parameter counts, components, tree, memory, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER
from vlmkit.inspect import inspect_model

HF_ZOO = ["llava-calm2-siglip", "llava-clip", "paligemma", "opencalm", "llama", "minilm"]
EXPECTED_COMPONENTS = {
    "llava-calm2-siglip": {VISION_TOWER, PROJECTOR, LANGUAGE_MODEL, HEAD},
    "llava-clip": {VISION_TOWER, PROJECTOR, LANGUAGE_MODEL, HEAD},
    "paligemma": {VISION_TOWER, PROJECTOR, LANGUAGE_MODEL},   # head tied to the embeddings
    "opencalm": {LANGUAGE_MODEL, HEAD},
    "llama": {LANGUAGE_MODEL, HEAD},
    "vila": {VISION_TOWER, PROJECTOR, LANGUAGE_MODEL, HEAD},
    "minilm": {LANGUAGE_MODEL, HEAD},
}


def transformers_parameter_count(folder) -> int:
    config = transformers.AutoConfig.from_pretrained(folder)
    model_class = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        model = model_class._from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", HF_ZOO)
def test_parameter_count_equals_transformers(zoo, name):
    folder = zoo(name)
    report = inspect_model(folder)
    assert report.params == transformers_parameter_count(folder)
    assert {c.name for c in report.components} == EXPECTED_COMPONENTS[name]
    assert sum(c.params for c in report.components) == report.params
    assert not report.family_guessed


@pytest.mark.parametrize("name", ["llava-calm2-siglip", "opencalm", "minilm"])
def test_tree_from_config_matches_transformers(zoo, name):
    folder = zoo(name)
    report = inspect_model(folder, tree=True)
    assert report.tree["source"] == "config"
    assert report.tree["root"]["params"] == report.params


def test_tree_folds_layers(zoo):
    report = inspect_model(zoo("llama"), tree=True)
    text = json.dumps(report.tree)
    layers = transformers.AutoConfig.from_pretrained(zoo("llama")).num_hidden_layers
    assert f'"repeat": {layers}' in text and '"{0..' in text


def test_vila_custom_code_inspects_without_running_code(zoo):
    report = inspect_model(zoo("vila"))
    assert report.family == "llava_llama" and report.custom_code
    assert {c.name for c in report.components} == EXPECTED_COMPONENTS["vila"]
    report = inspect_model(zoo("vila"), tree=True)
    assert report.tree["source"] == "tensor names"
    assert report.tree["root"]["params"] == report.params


def test_folded_tensor_table(zoo):
    report = inspect_model(zoo("llava-calm2-siglip"))
    layers = json.loads((zoo("llava-calm2-siglip") / "config.json").read_text())["text_config"]["num_hidden_layers"]
    rows = {r.pattern: r for r in report.tensors}
    q = rows[f"language_model.model.layers.{{0..{layers - 1}}}.self_attn.q_proj.weight"]
    assert q.count == layers and q.component == LANGUAGE_MODEL
    assert sum(r.count for r in report.tensors) == len(report.tied) + len(report.buffers) + sum(
        c.tensors for c in report.components)


def test_tokenizer_summary(zoo):
    report = inspect_model(zoo("llava-calm2-siglip"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(zoo("llava-calm2-siglip"))
    assert report.tokenizer.kind == "BPE"
    assert report.tokenizer.vocab_size == len(tokenizer)
    assert report.tokenizer.chat_template
    assert report.tokenizer.special_tokens.get("eos_token") == tokenizer.eos_token


def test_memory_follows_tensor_sizes(zoo):
    report = inspect_model(zoo("llama"), memory=True)
    rows = {r["scheme"]: r["bytes"] for r in report.memory["inference"]}
    assert rows["f32"] == 4 * report.params
    assert rows["bf16"] == rows["f16"] == 2 * report.params
    assert rows["int4"] < rows["int8"] < rows["bf16"]
    assert rows["q4_k_m"] < rows["q8_0"] < rows["bf16"]
    assert report.memory["training"]["adam_fp32"] == 16 * report.params


def test_gguf_and_npz_inspect(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((10, 32), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), np.float16))
    writer.add_tensor("output.weight", np.zeros((10, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    report = inspect_model(tmp_path / "m.gguf")
    assert report.family == "gguf" and report.params == 10 * 32 * 2 + 32 * 32
    assert {c.name: c.params for c in report.components} == {LANGUAGE_MODEL: 320 + 1024, HEAD: 320}

    np.savez(tmp_path / "pg.npz", **{
        "params/img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": np.zeros((2, 8, 16), np.float32),
        "params/img/head/kernel": np.zeros((8, 4), np.float32),
        "params/llm/layers/attn/q_einsum/w": np.zeros((2, 2, 4, 2), np.float32),
    })
    report = inspect_model(tmp_path / "pg.npz")
    assert report.family == "paligemma"
    assert {c.name: c.params for c in report.components} == {VISION_TOWER: 256, PROJECTOR: 32, LANGUAGE_MODEL: 32}


def test_unknown_architecture_is_guessed(tmp_path):
    from safetensors.torch import save_file

    save_file({"visual.blocks.0.w": torch.zeros(4, 4), "text.layers.0.w": torch.zeros(4, 4),
               "connector.w": torch.zeros(2, 4)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "architectures": ["MysteryVLM"]}))
    report = inspect_model(tmp_path)
    assert report.family_guessed
    assert {c.name for c in report.components} == {VISION_TOWER, LANGUAGE_MODEL, PROJECTOR}


def test_cli_json_and_table(zoo):
    folder = zoo("opencalm")
    out = subprocess.run([sys.executable, "-m", "vlmkit", "inspect", str(folder), "--json", "--memory"],
                         capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["params"] == transformers_parameter_count(folder)
    assert data["memory"]["inference"][0]["scheme"] == "f32"
    out = subprocess.run([sys.executable, "-m", "vlmkit", "inspect", str(folder), "--tree"],
                         capture_output=True, text=True, check=True)
    assert "GPTNeoXForCausalLM" in out.stdout and "components" in out.stdout


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_run_memory_prediction_holds_the_files_and_cache_vlmkit_run_allocates(zoo, tmp_path, dtype):
    """``inspect --memory``'s ``vlmkit run`` rows: the weights are the GGUF files ``convert`` writes (within
    10 %: metadata, the tower's blocks after the feature layer) and the KV cache is the one the llama.cpp
    backend sizes for an answer about one image (the whole peak is checked at 7.5 B by bench/seed_scale.py)."""
    import vlmkit
    from vlmkit.convert import convert
    from vlmkit.runtime.prompt import load_image

    model = zoo("llava-calm2-siglip")
    out = tmp_path / "gguf"
    convert(model, out, dtype=dtype, verify=False)
    files = sum(f.stat().st_size for f in out.glob("*.gguf"))
    row = next(r for r in inspect_model(model, memory=True).memory["run"] if r["scheme"] == dtype)
    assert abs(row["weights"] - files) <= 0.1 * files, (row, files)
    config = json.loads((model / "config.json").read_text())["text_config"]
    runner = vlmkit.load(out, device="cpu")
    try:
        from PIL import Image
        from skimage import data

        runner.generate("What is this?", images=[load_image(Image.fromarray(data.astronaut()))], max_new_tokens=64)
        per_position = 2 * config["num_hidden_layers"] * 2 * config["num_key_value_heads"] * (
            config["hidden_size"] // config["num_attention_heads"])
        assert row["kv_cache"] == runner.backend.kv_size * per_position
    finally:
        runner.close()


@pytest.mark.parametrize("name,symmetric,group_size", [("llava-calm2-siglip", True, 128), ("llama", False, 128),
                                                       ("llama", True, 96), ("vila", True, 128)])
def test_compressed_tensors_export_counts_as_the_model_it_stands_for(zoo, tmp_path, name, symmetric, group_size):
    """A pack-quantized export (int32 words of 8 int4 values + scales, zero points when asymmetric; group 96 makes
    the per-channel fallback, a second scheme; VILA's scheme is in llm/config.json) has the source's parameter count, per component too, and its
    files' bytes, and the memory plans of the same model; the packed Linears are counted at their logical shapes
    as I4."""
    from vlmkit.quant.pipeline import quantize

    out = tmp_path / "q"
    result = quantize(zoo(name), out, method="rtn", bits=4, group_size=group_size, symmetric=symmetric,
                      calib="demo", samples=2, held_out=1, progress=False)
    source, packed = inspect_model(zoo(name), memory=True), inspect_model(out, memory=True)
    assert packed.memory["inference"] == source.memory["inference"]  # f32 / bf16 / q4_k_m ... of the same model
    assert packed.params == source.params  # the source against transformers: test_parameter_count_equals_transformers
    assert {c.name: c.params for c in packed.components} == {c.name: c.params for c in source.components}
    stored = 0
    for file in out.rglob("*.safetensors"):  # VILA: llm/, vision_tower/, mm_projector/
        raw = file.read_bytes()
        header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
        stored += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")
    assert packed.bytes == stored and not packed.buffers and not packed.tied
    assert packed.quantization["packed_linears"] == len(result.quantized) > 0
    assert packed.dtypes["I4"]["tensors"] == len(result.quantized)
    schemes = packed.quantization["schemes"]
    assert {s["num_bits"] for s in schemes} == {4} and {s["symmetric"] for s in schemes} == {symmetric}
    assert source.quantization is None and "I32" not in packed.dtypes


@pytest.mark.parametrize("groups", [[1, 2], {"g": None}, {"g": {"weights": {"num_bits": "4"}}},
                                    {"g": {"weights": {"num_bits": 0}, "targets": "Linear"}}])
def test_unreadable_compressed_tensors_scheme_counts_tensors_as_stored(zoo, tmp_path, groups):
    """A quantization_config that does not give one readable bit width: the packed tensors are counted as stored
    and said so, never a traceback."""
    from vlmkit.quant.pipeline import quantize

    out = tmp_path / "q"
    quantize(zoo("llama"), out, method="rtn", bits=4, calib="demo", samples=2, held_out=1, progress=False)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["config_groups"] = groups
    (out / "config.json").write_text(json.dumps(config))
    report = inspect_model(out)
    assert report.quantization["packed_as_stored"] == 14 and report.quantization["packed_linears"] == 0
    assert "I32" in report.dtypes
