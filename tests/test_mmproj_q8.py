"""q8_0 mmproj.gguf (``convert --mmproj-dtype q8_0``): the tensor types written, mtmd loads the file, and its
image embeddings against transformers' (fp32) next to the f16 file's, on the same photo.

The bound, derived: Q8_0 stores each 32-weight block as ``round(w / d) * d`` with ``d = max|w| / 127``: the
error per weight is uniform in ``±d/2`` (RMS ``d / sqrt(12)``), and for Gaussian-like rows ``max|w|`` of 32
values is ~2.5 sigma, so a matrix's relative RMS error is ~2.5 / (127 sqrt(12)) = 5.7e-3. ggml's CPU kernel
also rounds each activation row to Q8_0 before the integer dot product (the vec_dot type of Q8_0 is Q8_0),
the same size again: ~8e-3 relative error per matmul. Independent errors of the ``k`` matmuls on the path
add in quadrature, ``delta ~ 8e-3 sqrt(k)``, and ``1 - cosine ~ delta**2 / 2``. The zoo towers have 2 blocks
of 6 matmuls + 2 projector matmuls (k = 14): delta ~ 0.03, 1 - cosine ~ 4.5e-4; the demo's 3 blocks,
k = 20: 6.4e-4. The tests allow ``1 - cosine <= 2e-3`` (3-4x the estimate) and the worst single token
``1 - cosine <= 1e-2``; the f16 file is held to its own bound (``tests/test_mmproj.py``: 1e-6 for a
photo at the input size, 1e-5 through a resize) and must be at least 20x closer than q8_0.
Measured on scikit-image's cat photo (451x300, resized by the model's processor), 1 - cosine f16 / q8_0:
SigLIP replica 3.3e-7 / 1.5e-4, CLIP replica 1.3e-7 / 8.3e-5, demo 1.7e-7 / 1.6e-4 (worst token 8.7e-4);
max |diff| / max |reference| 6e-4..8e-4 (f16) and 1.6..2.1 % (q8_0). The demo's 24 held-out greedy answers
are the same with either mmproj.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vlmkit
from vlmkit.cli import _register, app
from vlmkit.errors import UnsupportedError
from vlmkit.eval.image_parity import verify_image_embeddings, verify_photo
from vlmkit.gguf import mmproj as M

Q8_COSINE, Q8_TOKEN_COSINE, F16_COSINE = 2e-3, 1e-2, 1e-5
_register()
MODELS = {"siglip": "zoo:llava-calm2-siglip", "clip": "zoo:llava-clip", "demo": "demo"}


def _types(path: Path) -> dict[str, str]:
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def _model(name: str) -> Path:
    from vlmkit.hub import resolve_model

    return resolve_model(name)


def _check_types(types: dict[str, str], kept: dict[str, str]) -> None:
    """Every 2-D matmul weight Q8_0 (those whose rows are whole 32-blocks), the rest what llama.cpp keeps."""
    for name, gtype in types.items():
        if name == "v.patch_embd.weight":
            assert gtype in ("F32", "BF16") and name in kept
        elif name.endswith(".bias") or ".ln" in name or "_ln." in name or name.startswith(("v.position_embd", "v.class_embd")):
            assert gtype == "F32" and kept[name].startswith("F32:"), name
        elif gtype != "Q8_0":
            assert gtype == "F16" and "32-wide Q8_0 blocks" in kept[name], name
    assert set(kept) == {n for n, t in types.items() if t != "Q8_0"}


@pytest.mark.llamacpp
@pytest.mark.parametrize("kind", list(MODELS))
def test_q8_0_mmproj_types_and_embeddings_vs_f16(kind, tmp_path):
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    from vlmkit.eval.image_parity import _load_hf

    model_dir = _model(MODELS[kind])
    config = json.loads((model_dir / "config.json").read_text())
    photo_name, photo = verify_photo()
    hf = _load_hf(model_dir)
    reports = {}
    for dtype in ("f16", "q8_0"):
        result = M.write_mmproj(model_dir, config, None, tmp_path / dtype / "mmproj.gguf", dtype=dtype)
        types = _types(result.path)
        if dtype == "q8_0":
            assert result.metadata["general.file_type"] == 7   # MOSTLY_Q8_0
            _check_types(types, result.kept)
            assert types["mm.0.weight"] == types["mm.2.weight"] == types["v.blk.0.attn_q.weight"] == "Q8_0"
            assert types["v.blk.0.ffn_down.weight"] == "Q8_0"   # 64 / 128 wide: whole blocks everywhere here
        else:
            assert result.kept == {} and types["v.blk.0.attn_q.weight"] == "F16"
        reports[dtype] = verify_image_embeddings(model_dir, tmp_path / dtype, photo, model=hf)
    f16, q8 = (1 - reports[d]["cosine"] for d in ("f16", "q8_0"))
    q8_token = 1 - reports["q8_0"]["min_token_cosine"]
    print(f"{kind} ({photo_name}): 1 - cosine f16 {f16:.3g}, q8_0 {q8:.3g} (worst token {q8_token:.3g}); "
          f"max |diff| / max |ref| f16 {reports['f16']['max_abs_diff'] / reports['f16']['ref_max_abs']:.3g}, "
          f"q8_0 {reports['q8_0']['max_abs_diff'] / reports['q8_0']['ref_max_abs']:.3g}")
    assert f16 <= F16_COSINE, reports["f16"]
    assert q8 <= Q8_COSINE and q8_token <= Q8_TOKEN_COSINE, reports["q8_0"]
    assert q8 >= 20 * max(f16, 1e-9), (f16, q8)   # the q8_0 weights really are rounded (negative control)


@pytest.mark.llamacpp
def test_q8_0_keeps_rows_the_block_does_not_divide_at_f16(tmp_path):
    """SigLIP-so400m's fc2 has 4304 inputs (4304 / 32 is not whole): here a tower with 80 (also not whole)
    gets an F16 ffn_down next to Q8_0 weights, as llama.cpp's converter falls back, and mtmd runs the mixed
    file within the q8_0 bound."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    from test_mmproj import tiny_siglip_llava

    model = tiny_siglip_llava(tmp_path / "hf", 64, 80)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    result = M.write_mmproj(tmp_path / "hf", cfg, None, tmp_path / "out" / "mmproj.gguf", dtype="q8_0")
    types = _types(result.path)
    _check_types(types, result.kept)
    assert types["v.blk.0.ffn_down.weight"] == "F16" and types["v.blk.0.ffn_up.weight"] == "Q8_0"
    assert result.kept["v.blk.1.ffn_down.weight"].startswith("F16: 80 inputs per row")
    report = verify_image_embeddings(tmp_path / "hf", tmp_path / "out", model=model)
    assert 1 - report["cosine"] <= Q8_COSINE, report


def test_mmproj_dtype_choice():
    assert [M.mmproj_dtype(lm) for lm in ("f32", "bf16", "f16", "q4_k_m", "q8_0")] == \
        ["f32", "bf16", "f16", "f16", "f16"]
    assert [M.mmproj_dtype("q4_k_m", asked) for asked in ("Q8_0", "fp16", "float32", "bf16")] == \
        ["q8_0", "f16", "f32", "bf16"]
    for bad in ("q4_k_m", "int8"):
        with pytest.raises(UnsupportedError, match=f"--mmproj-dtype {bad}: choose one of f32, f16, bf16, q8_0"):
            M.mmproj_dtype("f16", bad)


def test_convert_cli_mmproj_dtype_json_and_bad_value(zoo, tmp_path):
    model_dir = zoo("llava-clip")
    runner = CliRunner()
    out = runner.invoke(app, ["convert", str(model_dir), "--out", str(tmp_path / "q8v"), "--dtype", "q8_0",
                              "--mmproj-dtype", "q8_0", "--no-verify", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["mmproj_dtype"] == "q8_0"
    types = _types(tmp_path / "q8v" / "mmproj.gguf")
    assert set(report["mmproj_kept"]) == {n for n, t in types.items() if t != "Q8_0"}
    assert "v.class_embd" in report["mmproj_kept"] and types["mm.2.weight"] == "Q8_0"
    default = runner.invoke(app, ["convert", str(model_dir), "--out", str(tmp_path / "f16v"), "--dtype", "q8_0",
                                  "--no-verify", "--json"])
    assert json.loads(default.output)["mmproj_dtype"] == "f16" and json.loads(default.output)["mmproj_kept"] == {}
    bad = subprocess.run([sys.executable, "-m", "vlmkit", "convert", str(model_dir), "--out", str(tmp_path / "bad"),
                          "--mmproj-dtype", "q4_k_m"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --mmproj-dtype q4_k_m: choose one of"), bad.stderr
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.llamacpp
def test_demo_greedy_answers_q8_0_mmproj_vs_f16(tmp_path):
    """The demo's held-out questions (8 images x 3) through `vlmkit.load` (what `vlmkit run` uses) on a q8_0
    language model with the f16 and with the q8_0 mmproj: the greedy answers are the same."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    from vlmkit.convert import convert
    from vlmkit.demo.dataset import make_split

    for mmproj_dtype in ("f16", "q8_0"):
        convert("demo", tmp_path / mmproj_dtype, dtype="q8_0", verify=False, mmproj_dtype=mmproj_dtype)
    asked = [(item.image, qa.question) for item in make_split("test", 8) for qa in item.questions]
    answers = {}
    for mmproj_dtype in ("f16", "q8_0"):
        with vlmkit.load(tmp_path / mmproj_dtype) as runner:
            answers[mmproj_dtype] = [runner.generate(q, images=[image], max_new_tokens=8).text for image, q in asked]
    differ = [(q, a, b) for (_, q), a, b in zip(asked, answers["f16"], answers["q8_0"]) if a != b]
    print(f"demo: {len(differ)} of {len(asked)} greedy answers differ between the f16 and q8_0 mmproj: {differ}")
    assert not differ
