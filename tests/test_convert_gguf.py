"""GGUF export parity: each zoo LLM / VLM converted at f32 runs in llama.cpp with the same tokens and
logits as transformers (the numbers come from vlmkit.eval.verify, through the backends vlmkit run uses)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from typer.testing import CliRunner

import llama_cpp  # noqa: E402,F401  (a test dependency: missing fails the run, never skips it)

from vlmkit.convert import convert  # noqa: E402

LM_ZOO = ["llama", "llava-calm2-siglip", "llava-clip", "opencalm", "vila"]


def _zoo_dir(zoo, name: str) -> Path:
    return zoo(name)


@pytest.fixture(scope="module")
def f32_results(zoo, tmp_path_factory):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = convert(_zoo_dir(zoo, name), tmp_path_factory.mktemp(name) / "out", dtype="f32",
                                  verify=True, threads=2)
        return cache[name]

    return get


@pytest.mark.parametrize("name", LM_ZOO)
def test_f32_greedy_tokens_and_logits_match_transformers(f32_results, name):
    """The README's parity table: greedy tokens identical on every zoo model at f32."""
    result = f32_results(name)
    report = result.verify
    assert report.greedy_identical, report.as_dict()["greedy"]
    assert report.teacher.same_top1 >= 0.999
    if result.arch == "llama":  # on the text path only the runtime's f16 KV cache (what `vlmkit run` uses)
        assert report.teacher.mean_kld <= 1e-6
        assert report.teacher.max_abs_diff < 1e-2
    else:  # GPT-NeoX: ggml's fp16 GELU table; issue 4's bound at f32
        assert report.teacher.mean_kld <= 1e-4


@pytest.mark.parametrize("name", LM_ZOO)
def test_tokenizer_agrees_with_transformers_on_en_ja_corpus(f32_results, name):
    check = f32_results(name).verify.tokenizer
    assert check.unexplained == 0, [m for m in check.mismatches if not m["explained"]]
    if name in ("llava-calm2-siglip", "opencalm"):  # byte-level BPE with no llama.cpp hash: exact
        assert check.agreement == 1.0


def test_unknown_bpe_pre_tokenizer_is_matched_by_regex(f32_results):
    result = f32_results("llava-calm2-siglip")
    assert "'gpt-2'" in result.tokenizer
    reader = gguf.GGUFReader(result.model_path)
    pre = reader.fields["tokenizer.ggml.pre"]
    assert bytes(pre.parts[pre.data[0]]).decode() == "gpt-2"


def test_vlm_language_model_leaves_vision_to_mmproj(f32_results):
    result = f32_results("llava-clip")
    names = {t.name for t in gguf.GGUFReader(result.model_path).tensors}
    assert not any(n.startswith(("v.", "mm.")) for n in names)
    assert set(result.dropped.values()) == {"vision tower / projector: written to mmproj.gguf"}
    assert result.mmproj_path is not None and result.mmproj_path.exists()


def test_q8_0_runs_in_llama_cpp_and_reports_numbers(zoo, tmp_path):
    result = convert(_zoo_dir(zoo, "llava-calm2-siglip"), tmp_path / "q8", dtype="q8_0", verify=True,
                     mmproj=False, threads=2)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(result.model_path).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    report = result.verify
    assert report.tokenizer.agreement == 1.0
    assert 0 < report.teacher.mean_kld < 0.1        # quantization error: present, bounded
    assert report.teacher.same_top1 >= 0.9
    assert list((tmp_path / "q8").iterdir()) == [tmp_path / "q8" / "model.gguf"]


def test_q8_0_weights_are_the_source_weights_within_quantization_error(zoo, tmp_path):
    """llama.cpp's quantizer ran on correctly laid-out tensors: dequantized (by gguf-py), each Q8_0 weight
    is within half a quantization step (absmax/127 per block of 32, plus the f16 rounding of the block
    scale: 127 * 2**-11 of a step) of the source."""
    import numpy as np
    from safetensors.numpy import load_file

    src_dir = _zoo_dir(zoo, "llava-calm2-siglip")
    result = convert(src_dir, tmp_path / "q8", dtype="q8_0", verify=False, mmproj=False)
    tensors = {t.name: t for t in gguf.GGUFReader(result.model_path).tensors}
    source = load_file(src_dir / "model.safetensors")
    w = source["language_model.model.layers.1.mlp.down_proj.weight"].astype(np.float32)
    q = tensors["blk.1.ffn_down.weight"]
    assert q.tensor_type.name == "Q8_0"
    deq = gguf.quants.dequantize(q.data, q.tensor_type).reshape(w.shape)
    step = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert (np.abs(deq - w).reshape(-1, 32) <= step * (0.5 + 127 * 2**-11) + 1e-7).all()
    assert np.abs(deq - w).max() > 0


def test_cli_json_prints_paths(zoo, tmp_path):
    from vlmkit.cli import _register, app

    _register()
    out = tmp_path / "cli"
    run = CliRunner().invoke(app, ["convert", str(_zoo_dir(zoo, "llava-calm2-siglip")), "--out", str(out),
                                   "--dtype", "f16", "--no-verify", "--json"])
    assert run.exit_code == 0, run.output
    data = json.loads(run.output)
    assert data["model"] == str(out / "model.gguf") and Path(data["model"]).exists()
    assert data["verify"] is None and data["dtype"] == "f16"


@pytest.mark.parametrize("name", ["llava-calm2-siglip", "llava-clip"])
def test_f32_greedy_tokens_with_an_image_match_transformers(f32_results, name):
    """mtmd's image embeddings from our mmproj.gguf, fed between the same text tokens, give transformers'
    greedy tokens; teacher-forced after the image, the distributions agree."""
    result = f32_results(name)
    assert result.mmproj_path is not None, result.notes
    image = result.verify.image_greedy
    assert image is not None and "skipped" not in image, image
    assert image["first_diff"] is None, image
    assert image["teacher"]["same_top1"] == 1.0
    assert image["teacher"]["mean_kld"] <= 1e-4


@pytest.mark.parametrize("name", ["llama", "llava-clip", "llava-calm2-siglip", "vila"])
def test_tokenizer_facts_llama_cpp_cannot_infer_are_written(zoo, tmp_path, name):
    """What llama.cpp needs to tokenize like transformers, read back with gguf-py: add_bos/add_eos as the
    HF tokenizer actually behaves, vlmkit's prepend_scheme key for Metaspace "first", and every added
    token (llava's <image>) under its own text, not a "[PAD<id>]" filler."""
    from transformers import AutoTokenizer

    from vlmkit.gguf.tokenizer import KEY_PREPEND_SCHEME, tokenizer_dir

    tok_dir = tokenizer_dir(_zoo_dir(zoo, name))
    hf = AutoTokenizer.from_pretrained(tok_dir)
    result = convert(_zoo_dir(zoo, name), tmp_path / "out", dtype="f32", verify=False)
    fields = gguf.GGUFReader(result.model_path).fields
    with_special, plain = hf("a")["input_ids"], hf("a", add_special_tokens=False)["input_ids"]
    assert fields["tokenizer.ggml.add_bos_token"].contents() == (with_special[:1] == [hf.bos_token_id] != plain[:1])
    assert fields["tokenizer.ggml.add_eos_token"].contents() == (with_special[-1:] == [hf.eos_token_id] != plain[-1:])
    pre = json.loads((tok_dir / "tokenizer.json").read_text())["pre_tokenizer"]
    first = pre.get("type") == "Metaspace" and pre.get("prepend_scheme") == "first"
    assert first == (name != "llava-calm2-siglip")
    assert (KEY_PREPEND_SCHEME in fields and fields[KEY_PREPEND_SCHEME].contents()) == (first and "first")
    vocab = fields["tokenizer.ggml.tokens"].contents()
    added = {t.content: i for i, t in hf.added_tokens_decoder.items()}
    assert added and all(vocab[i] == text for text, i in added.items()), added
    if name.startswith("llava"):
        assert vocab[hf.convert_tokens_to_ids("<image>")] == "<image>"


def test_f16_convert_without_verification_never_imports_torch(zoo, tmp_path):
    """``convert --dtype f16 --no-verify`` of a VLM streams tensors through safetensors, numpy and gguf-py:
    importing torch (transformers' config and image-processor classes do) costs ~380 MB before any weight,
    more than the whole conversion needs (issue 12: < 300 MB peak RSS at 15 GB of source)."""
    from module_audit import vlmkit_modules

    out = tmp_path / "out"
    _, modules = vlmkit_modules("convert", str(zoo("llava-calm2-siglip")), "--out", str(out), "--dtype", "f16",
                                "--no-verify")
    assert sorted(p.name for p in out.iterdir()) == ["mmproj.gguf", "model.gguf"]
    assert not [m for m in modules if m == "torch" or m.startswith("transformers.models.")], modules
