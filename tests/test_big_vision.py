"""big_vision PaliGemma <-> Hugging Face: a tiny npz written from big_vision's own shapes and einsum
equations (``big_vision_reference``, not vlmkit's map) converts to an HF checkpoint whose transformers
logits equal the reference forward; the round trip is bit-exact; inspect, run and bad input."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import big_vision_reference as ref
from vlmkit.convert import convert
from vlmkit.errors import VlmkitError

PROMPT, SUFFIX = [2, 5, 7, 9, 300], [11, 13, 17]

VARIANTS = {
    # PaliGemma 1: MQA (q_einsum + kv_einsum), scanned, params/ prefix
    "pg1-scanned": (ref.TinyPaliGemma(), None, "params/"),
    # fused qkv_einsum (kv heads == heads), unscanned with layers_{i} spelling
    "qkv-unscanned": (ref.TinyPaliGemma(num_kv_heads=4), "llm/layers_{i}/", ""),
    # PaliGemma 2: Gemma 2 with GQA, post-norms and soft-capping, unscanned llm/layers/{i}/
    "pg2-unscanned": (ref.TinyPaliGemma(num_kv_heads=2, post_norms=True, attn_softcap=50.0, final_softcap=30.0),
                      "llm/layers/{i}/", ""),
}


def write_variant(tmp_path: Path, name: str, bf16: bool = False) -> tuple[Path, dict, ref.TinyPaliGemma]:
    cfg, unscanned, prefix = VARIANTS[name]
    params = ref.make_params(cfg)
    stored = ref.unscan(params, unscanned) if unscanned else params
    path = tmp_path / f"{name}.npz"
    ref.save_npz(path, stored, prefix=prefix, bf16=bf16)
    return path, params, cfg


def hf_logits(model_dir: Path, image: np.ndarray, prefix: list[int], suffix: list[int]) -> np.ndarray:
    from transformers import PaliGemmaForConditionalGeneration

    model = PaliGemmaForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    n_image = model.config.text_config.num_image_tokens
    ids = torch.tensor([[model.config.image_token_index] * n_image + prefix + suffix])
    token_types = torch.tensor([[0] * (n_image + len(prefix)) + [1] * len(suffix)])
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels, token_type_ids=token_types).logits[0].double().numpy()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_model_gives_the_einsum_forward_logits(tmp_path, variant):
    npz, params, cfg = write_variant(tmp_path, variant)
    result = convert(npz, tmp_path / "hf", to="hf")
    assert result.tensors_in == len(np.load(npz).files)
    image = np.random.default_rng(1).uniform(-1, 1, (cfg.image, cfg.image, 3)).astype(np.float32)
    want = ref.forward(params, cfg, image, PROMPT, SUFFIX)
    got = hf_logits(tmp_path / "hf", image, PROMPT, SUFFIX)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)   # logits ~30 in size: float32 rounding only
    assert np.abs(want).max() > 1.0


@pytest.mark.parametrize("variant,bf16", [("pg1-scanned", True), ("qkv-unscanned", False), ("pg2-unscanned", True)])
def test_round_trip_is_bit_exact(tmp_path, variant, bf16):
    npz, _, _ = write_variant(tmp_path, variant, bf16=bf16)
    convert(npz, tmp_path / "hf", to="hf")
    if bf16:
        assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
    convert(tmp_path / "hf", tmp_path / "back.npz", to="big_vision")
    before, after = _members(npz), _members(tmp_path / "back.npz")
    assert before.keys() == after.keys()
    for name, (header, data) in before.items():
        assert after[name] == (header, data), name


def _members(path: Path) -> dict[str, tuple[tuple, bytes]]:
    """Each array's (dtype, shape) and raw bytes, read without vlmkit."""
    archive = np.load(path, allow_pickle=False)
    return {name: ((archive[name].dtype.str, archive[name].shape), archive[name].tobytes()) for name in archive.files}


def test_hf_fine_tune_goes_back_to_big_vision(tmp_path):
    """An HF checkpoint with no big_vision history (the zoo replica) is written scanned with bare keys,
    and the npz converts back to the same HF tensors."""
    from safetensors.numpy import load_file

    from vlmkit import zoo

    source = zoo.build("paligemma")
    convert(source, tmp_path / "pg.npz", to="big_vision")
    names = np.load(tmp_path / "pg.npz").files
    assert "llm/layers/attn/kv_einsum/w" in names and "img/Transformer/encoderblock/LayerNorm_0/scale" in names
    convert(tmp_path / "pg.npz", tmp_path / "hf", to="hf")
    want, got = load_file(source / "model.safetensors"), load_file(tmp_path / "hf" / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name], got[name]), name


def test_converted_model_runs_with_an_image(tmp_path):
    """``vlmkit run``'s runtime on the converted model (processor files from the tokenizer) answers with
    the tokens the big_vision reference forward predicts, greedy, prefix-LM attention."""
    from vlmkit import zoo
    from vlmkit.api import load

    cfg = ref.TinyPaliGemma()
    params = ref.make_params(cfg)
    ref.save_npz(tmp_path / "pg.npz", params)
    (tmp_path / "tokenizer.model").write_bytes((zoo.build("paligemma") / "tokenizer.model").read_bytes())
    result = convert(tmp_path / "pg.npz", tmp_path / "hf", to="hf")      # tokenizer found beside the npz
    assert result.tokenizer is not None and (tmp_path / "hf" / "tokenizer.json").is_file()
    from PIL import Image
    from skimage import data

    picture = Image.fromarray(data.astronaut())
    with load(str(tmp_path / "hf"), dtype="f32") as runner:
        answer = runner.generate("caption en", images=[picture], max_new_tokens=3)
        inputs = runner.backend.processor(text="caption en", images=picture, return_tensors="pt")
    n_image = (cfg.image // cfg.patch) ** 2
    prompt = inputs["input_ids"][0, n_image:].tolist()
    image = inputs["pixel_values"][0].numpy().transpose(1, 2, 0)
    expected: list[int] = []
    for _ in range(len(answer.token_ids)):
        expected.append(int(ref.forward(params, cfg, image, prompt, expected)[-1].argmax()))
    assert answer.token_ids and answer.token_ids == expected


def test_run_cli_on_converted_model(tmp_path):
    from typer.testing import CliRunner

    from vlmkit import zoo
    from vlmkit.cli import _register, app

    _register()
    ref.save_npz(tmp_path / "pg.npz", ref.make_params(ref.TinyPaliGemma()), prefix="params/")
    tokenizer = zoo.build("paligemma") / "tokenizer.model"
    runner = CliRunner()
    converted = runner.invoke(app, ["convert", str(tmp_path / "pg.npz"), "--to", "hf", "--out", str(tmp_path / "hf"),
                                    "--tokenizer", str(tokenizer), "--json"])
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.output)["direction"] == "big_vision -> hf"
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    ran = runner.invoke(app, ["run", str(tmp_path / "hf"), "--image", str(tmp_path / "a.png"), "--prompt",
                              "caption en", "--max-new-tokens", "4", "--json"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.output[ran.output.index("{"):])["completion_tokens"] >= 1


def test_inspect_shows_hf_names_and_layer_totals(tmp_path):
    from vlmkit.inspect import inspect_model

    npz, _, _ = write_variant(tmp_path, "pg1-scanned")
    report = inspect_model(npz)
    assert report.family == "paligemma"
    layers = {c.name: c.layers for c in report.components}
    assert layers == {"vision_tower": 2, "projector": 0, "language_model": 2}
    rows = {row.pattern: row.hf_name for row in report.tensors}
    assert rows["params/llm/layers/attn/kv_einsum/w"] == (
        "language_model.model.layers.{0..1}.self_attn.k_proj.weight, "
        "language_model.model.layers.{0..1}.self_attn.v_proj.weight")
    assert rows["params/img/head/kernel"] == "multi_modal_projector.linear.weight"
    from typer.testing import CliRunner

    from vlmkit.cli import _register, app

    _register()
    shown = CliRunner().invoke(app, ["inspect", str(npz)])
    assert shown.exit_code == 0 and "becomes (HF)" in shown.output and "multi_modal_projector.linear.weight" in shown.output


def test_3b_shapes_count_27_vision_and_18_lm_layers():
    """The published 3B shapes (from transformers' conversion script) through the same map inspect uses."""
    from vlmkit.families.ops import hf_names_for
    from vlmkit.families.paligemma import BIG_VISION, FAMILY
    from vlmkit.inspect import _component_stats
    from vlmkit.readers.base import TensorInfo

    shapes = {
        "img/embedding/kernel": (14, 14, 3, 1152), "img/embedding/bias": (1152,),
        "img/pos_embedding": (1, 256, 1152), "img/Transformer/encoder_norm/scale": (1152,),
        "img/Transformer/encoder_norm/bias": (1152,), "img/head/kernel": (1152, 2048), "img/head/bias": (2048,),
        "img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel": (27, 1152, 16, 72),
        "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel": (27, 1152, 4304),
        "llm/embedder/input_embedding": (257152, 2048), "llm/final_norm/scale": (2048,),
        "llm/layers/attn/q_einsum/w": (18, 8, 2048, 256), "llm/layers/attn/kv_einsum/w": (18, 2, 1, 2048, 256),
        "llm/layers/attn/attn_vec_einsum/w": (18, 8, 256, 2048), "llm/layers/mlp/gating_einsum": (18, 2, 2048, 16384),
    }
    names = hf_names_for(BIG_VISION, shapes)
    infos = {n: TensorInfo(n, s, "F32", 0, Path("x")) for n, s in shapes.items()}
    stats = {c.name: c.layers for c in _component_stats(infos, FAMILY, names)}
    assert stats["vision_tower"] == 27 and stats["language_model"] == 18
    assert names["llm/layers/attn/attn_vec_einsum/w"][17] == "language_model.model.layers.17.self_attn.o_proj.weight"


def test_preset_sets_published_shapes_and_mismatch_names_tensor_and_shapes(tmp_path):
    from vlmkit.families.paligemma import preset

    assert preset("paligemma-3b-pt-224")["text_config"]["hidden_size"] == 2048
    assert preset("paligemma2-28b-mix-448")["text_config"]["query_pre_attn_scalar"] == 144
    assert preset("paligemma2-10b-pt-896")["vision_config"]["image_size"] == 896
    npz, _, _ = write_variant(tmp_path, "pg1-scanned")
    with pytest.raises(VlmkitError, match=r"img/pos_embedding.*\[1, 16, 48\].*\[1, 256, 1152\]"):
        convert(npz, tmp_path / "hf", to="hf", config="paligemma-3b-pt-224")
    config = ref_config(tmp_path, npz)
    config["text_config"]["intermediate_size"] = 256
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VlmkitError, match=r"'language_model.model.layers.0.mlp.gate_proj.weight': the checkpoint "
                                          r"gives \[128, 64\], PaliGemmaForConditionalGeneration expects \[256, 64\]"):
        convert(npz, tmp_path / "hf", to="hf", config=str(tmp_path / "config.json"))
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf.tmp-*"))   # nothing half written


def ref_config(tmp_path: Path, npz: Path) -> dict:
    convert(npz, tmp_path / "inferred", to="hf")
    return json.loads((tmp_path / "inferred" / "config.json").read_text())


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    npz = tmp_path / "odd.npz"
    np.savez(npz, **{"img/embedding/kernel": np.zeros((14, 14, 3, 8), np.float32), "llm/what/is/this": np.zeros(3)})
    with pytest.raises(VlmkitError, match="odd.npz"):
        convert(npz, tmp_path / "hf", to="hf")
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("readme.txt", "no arrays")
    with pytest.raises(VlmkitError):
        convert(tmp_path / "x.npz", tmp_path / "hf", to="hf")
    with pytest.raises(VlmkitError, match="not supported"):
        convert(npz, tmp_path / "g", to="gguf")
