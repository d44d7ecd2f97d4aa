"""mmproj.gguf export: metadata and tensor mapping, and llama.cpp's image embeddings (mtmd) against
transformers' ``get_image_features`` on the SigLIP and CLIP LLaVA replicas of the zoo.

Tolerances (f32 file, test image at the model's input size so mtmd's resize is a copy):
* vs exact transformers: cosine > 1 - 1e-6 and max |diff| <= 2e-3 x max |reference|. ggml rounds to fp16
  the patch-conv im2col (pixels and kernel), the GELU / quick-GELU table lookups and flash attention's K/V
  (unit roundoff 2^-11 = 4.9e-4), and runs the projector's erf GELU as tanh GELU; measured here about
  2e-7 (1 - cosine) and 6e-4 (relative max diff).
* vs transformers with those approximations reproduced (``*_emulated``, flash attention off): what remains
  is the conversion: cosine > 1 - 1e-8 and max |diff| <= 5e-4 x scale (measured 3e-9 / 1.8e-4 on SigLIP,
  1e-11 / 1.5e-5 on CLIP; SigLIP's rest is single-ulp flips of the fp16 GELU table).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.eval.image_parity import verify_image_embeddings
from vlmkit.gguf import mmproj as M

ZOO = {"siglip": "llava-calm2-siglip", "clip": "llava-clip"}


@pytest.fixture(scope="module")
def written(zoo, tmp_path_factory):
    """name -> (model_dir, out_dir, MmprojResult) for both replicas, written once."""
    out = {}
    for kind, name in ZOO.items():
        model_dir = zoo(name)
        out_dir = tmp_path_factory.mktemp(f"mmproj-{kind}")
        config = json.loads((model_dir / "config.json").read_text())
        out[kind] = (model_dir, out_dir, M.write_mmproj(model_dir, config, None, out_dir / "mmproj.gguf"))
    return out


@pytest.fixture(scope="module")
def hf_models(written):
    from vlmkit.eval.image_parity import _load_hf

    return {kind: _load_hf(model_dir) for kind, (model_dir, _, _) in written.items()}


def _reader(path: Path):
    import gguf

    return gguf.GGUFReader(path)


@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_mmproj_metadata_and_mapping(written, kind):
    model_dir, out_dir, result = written[kind]
    reader = _reader(out_dir / "mmproj.gguf")
    meta = {name: f.contents() for name, f in reader.fields.items()}
    names = {t.name for t in reader.tensors}
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert meta["general.architecture"] == "clip" and meta["clip.projector_type"] == "mlp"
    assert meta["clip.has_vision_encoder"] is True
    assert (meta["clip.vision.image_size"], meta["clip.vision.patch_size"]) == (56, 14)
    # vision_feature_layer -2 of 3 blocks -> hidden_states[2]: 2 blocks written, the third dropped
    assert meta["clip.vision.feature_layer"] == [2] and meta["clip.vision.block_count"] == 2
    assert "v.blk.1.attn_q.weight" in names and not any(n.startswith("v.blk.2.") for n in names)
    assert np.allclose(meta["clip.vision.image_mean"], processor["image_mean"])
    assert np.allclose(meta["clip.vision.image_std"], processor["image_std"])
    assert meta["clip.vision.projection_dim"] == 256
    assert {"mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias"} <= names
    assert not any(n.startswith("v.post_ln") for n in names)
    reasons = set(result.dropped.values())
    assert any("before it" in r for r in reasons) and any("deepest feature layer" in r for r in reasons)
    if kind == "siglip":   # tanh GELU tower, no class token, attention-pool head dropped
        assert meta.get("clip.use_gelu") is True and "v.class_embd" not in names
        assert any("attention-pool head" in r for r in reasons)
        assert (meta["vlmkit.mmproj.llamacpp_rows"], meta["vlmkit.mmproj.hf_rows"]) == ([1, 16], [0, 15])
    else:                  # quick-GELU tower (no flag), class token, CLS position row moved last
        assert "clip.use_gelu" not in meta and "v.class_embd" in names
        assert (meta["vlmkit.mmproj.llamacpp_rows"], meta["vlmkit.mmproj.hf_rows"]) == ([0, 15], [1, 16])
        positions = next(t for t in reader.tensors if t.name == "v.position_embd.weight").data
        from safetensors import safe_open

        with safe_open(model_dir / "model.safetensors", "np") as f:
            source = f.get_tensor("vision_tower.vision_model.embeddings.position_embedding.weight")
        assert np.array_equal(positions, np.concatenate([source[1:], source[:1]]))


@pytest.mark.llamacpp
@pytest.mark.parametrize("kind", ["siglip", "clip"])
def test_mmproj_embeddings_match_transformers(written, hf_models, kind):
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    model_dir, out_dir, _ = written[kind]
    report = verify_image_embeddings(model_dir, out_dir, model=hf_models[kind])
    # image-token count: transformers' 'default' drops SigLIP's first patch (15), mtmd cannot (16)
    assert report["n_tokens_transformers"] == (15 if kind == "siglip" else 16)
    assert report["n_tokens"] == 16 and report["matched_tokens"] == 15
    assert report["cosine"] > 1 - 1e-6, report
    assert report["max_abs_diff"] <= 2e-3 * report["ref_max_abs"], report
    assert report["cosine_emulated"] > 1 - 1e-8, report
    assert report["max_abs_diff_emulated"] <= 5e-4 * report["ref_max_abs_emulated"], report


@pytest.mark.llamacpp
def test_clip_last_row_is_the_cls_output(written, hf_models):
    """The one CLIP row not compared above is exactly the projected CLS token (llama.cpp #25814), and no
    row rearrangement can bring patch 0 back: the transformers layout keeps mtmd's rows."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    import torch

    from vlmkit.eval.image_parity import _normalize, test_image
    from vlmkit.llamacpp.mtmd import MtmdEncoder

    model_dir, out_dir, _ = written["clip"]
    image = test_image(56)
    with MtmdEncoder(out_dir / "mmproj.gguf", flash_attn=False) as enc:
        rows, hf_layout = enc.encode(image), enc.encode(image, transformers_layout=True)
    pixels = _normalize(image, *M.image_normalization(model_dir))
    with torch.no_grad():
        full = hf_models["clip"].get_image_features(pixels, vision_feature_select_strategy="full")
    full = full.pooler_output[0].numpy()        # [CLS, patch 0 .. patch 15]
    cos = rows[-1] @ full[0] / np.linalg.norm(rows[-1]) / np.linalg.norm(full[0])
    assert cos > 1 - 1e-5
    assert np.array_equal(hf_layout, rows)


@pytest.mark.llamacpp
def test_position_order_matters(written, hf_models, tmp_path, monkeypatch):
    """Negative control: the transformers-order position table (no #25814 workaround) fails the check."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    model_dir, _, _ = written["clip"]
    monkeypatch.setattr(M, "_cls_last", lambda produce: produce)
    M.write_mmproj(model_dir, json.loads((model_dir / "config.json").read_text()), None, tmp_path / "mmproj.gguf")
    report = verify_image_embeddings(model_dir, tmp_path, model=hf_models["clip"])
    assert report["cosine"] < 0.999


@pytest.mark.llamacpp
def test_mmproj_f16_and_resize_effect(written, hf_models, tmp_path):
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    from vlmkit.eval.image_parity import test_image

    model_dir, _, _ = written["siglip"]
    config = json.loads((model_dir / "config.json").read_text())
    result = M.write_mmproj(model_dir, config, None, tmp_path / "mmproj.gguf", dtype="f16")
    assert result.metadata["general.file_type"] == 1
    types = {t.name: t.tensor_type.name for t in _reader(tmp_path / "mmproj.gguf").tensors}
    assert types["v.blk.0.attn_q.weight"] == "F16" and types["v.blk.0.ln1.weight"] == "F32"
    # a square image at twice the size: mtmd's bicubic resize ~ the processor's (PIL bicubic)
    report = verify_image_embeddings(model_dir, tmp_path, test_image(112), model=hf_models["siglip"])
    assert report["cosine"] > 1 - 1e-5
    assert report["resize"]["image_size"] == [112, 112] and report["resize"]["cosine"] > 1 - 1e-5
    # non-square: mtmd alone letterboxes onto a grey square where SigLIP's processor stretches; vlmkit hands
    # mtmd the processor's pixels (the mmproj carries its config), so both sides see the same picture
    report = verify_image_embeddings(model_dir, tmp_path, test_image(97)[:, :80], model=hf_models["siglip"])
    assert report["cosine"] > 1 - 1e-5 and report["resize"]["cosine"] > 1 - 1e-5


@pytest.mark.llamacpp
def test_mmproj_loads_with_the_converted_text_model(zoo, tmp_path):
    """convert() writes model.gguf + mmproj.gguf; mtmd accepts the pair (its n_embd check passes) and
    gives the same embeddings as without the text model."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)
    from vlmkit.convert import convert
    from vlmkit.eval.image_parity import test_image
    from vlmkit.llamacpp.mtmd import encode_image

    result = convert(zoo("llava-clip"), tmp_path / "out", dtype="f32", verify=False)
    image = test_image(56)
    with_text = encode_image(result.mmproj_path, image, text_model=result.model_path)
    assert with_text.shape == (16, 256)
    assert np.array_equal(with_text, encode_image(result.mmproj_path, image))


def _fake_source(names_shapes: dict[str, tuple[int, ...]], fail: str | None = None):
    class Info:
        def __init__(self, shape):
            self.shape, self.dtype = shape, "F32"

    class Source:
        infos = {n: Info(s) for n, s in names_shapes.items()}

        def names(self):
            return list(self.infos)

        def read(self, name):
            if name == fail:
                raise VlmkitError(name, "read failed")
            return np.ones(self.infos[name].shape, np.float32)

    return Source()


def _tiny_config(**overrides) -> dict:
    config = {"model_type": "llava", "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
              "text_config": {"model_type": "llama", "hidden_size": 8, "num_attention_heads": 1,
                              "num_key_value_heads": 1},
              "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 4, "intermediate_size": 6,
                                "num_hidden_layers": 1, "num_attention_heads": 1, "image_size": 4,
                                "patch_size": 2}}
    config.update(overrides)
    return config


def _tiny_tensors(extra: dict | None = None) -> dict[str, tuple[int, ...]]:
    t = {"vision_tower.embeddings.patch_embedding.weight": (4, 3, 2, 2),
         "vision_tower.embeddings.patch_embedding.bias": (4,),
         "vision_tower.embeddings.position_embedding.weight": (4, 4),
         "multi_modal_projector.linear_1.weight": (8, 4), "multi_modal_projector.linear_2.weight": (8, 8)}
    for part, shape in {"self_attn.q_proj": (4, 4), "self_attn.k_proj": (4, 4), "self_attn.v_proj": (4, 4),
                        "self_attn.out_proj": (4, 4), "mlp.fc1": (6, 4), "mlp.fc2": (4, 6)}.items():
        t[f"vision_tower.encoder.layers.0.{part}.weight"] = shape
    t.update(extra or {})
    return t


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return tmp_path


def test_projector_without_bias_gets_zero_biases(tiny_dir):
    """``multimodal_projector_bias=False``: mtmd's llava graph adds mm.0/mm.2 biases unconditionally."""
    result = M.write_mmproj(tiny_dir, _tiny_config(), _fake_source(_tiny_tensors()), tiny_dir / "mmproj.gguf")
    assert result.tensors["mm.0.bias"] == "(zeros)" and result.tensors["mm.2.bias"] == "(zeros)"
    data = {t.name: t.data for t in _reader(tiny_dir / "mmproj.gguf").tensors}
    assert not data["mm.2.bias"].any() and data["mm.2.weight"].shape == (8, 8)


@pytest.mark.parametrize("overrides, match", [
    ({"vision_feature_select_strategy": "full",
      "vision_config": {"model_type": "clip_vision_model", "num_hidden_layers": 1}}, "always drops the class"),
    ({"projector_hidden_act": "relu"}, "no mtmd equivalent"),
    ({"vision_feature_layer": 0}, "outside 1..1"),
    ({"vision_config": {"model_type": "pixtral"}}, "vision tower 'pixtral'"),
])
def test_unsupported_configs_are_refused(tiny_dir, overrides, match):
    with pytest.raises(UnsupportedError, match=match):
        M.vision_hparams(tiny_dir, _tiny_config(**overrides))


def test_unknown_vision_tensor_stops_and_failure_leaves_nothing(tiny_dir):
    source = _fake_source(_tiny_tensors({"vision_tower.encoder.layers.0.adapter.weight": (4, 4)}))
    with pytest.raises(VlmkitError, match="adapter.weight"):
        M.write_mmproj(tiny_dir, _tiny_config(), source, tiny_dir / "mmproj.gguf")
    source = _fake_source(_tiny_tensors(), fail="multi_modal_projector.linear_2.weight")
    with pytest.raises(VlmkitError, match="read failed"):
        M.write_mmproj(tiny_dir, _tiny_config(), source, tiny_dir / "mmproj.gguf")
    assert sorted(p.name for p in tiny_dir.iterdir()) == ["preprocessor_config.json"]


def test_ffn_names_swapped_when_intermediate_equals_hidden(tiny_dir):
    """mtmd swaps ffn_up/ffn_down back when n_ff == n_embd, so they are written under each other's names."""
    config = _tiny_config()
    config["vision_config"]["intermediate_size"] = 4
    tensors = _tiny_tensors({"vision_tower.encoder.layers.0.mlp.fc1.weight": (4, 4),
                             "vision_tower.encoder.layers.0.mlp.fc2.weight": (4, 4)})
    result = M.write_mmproj(tiny_dir, config, _fake_source(tensors), tiny_dir / "mmproj.gguf")
    assert result.tensors["v.blk.0.ffn_down.weight"].endswith("mlp.fc1.weight")
    assert result.tensors["v.blk.0.ffn_up.weight"].endswith("mlp.fc2.weight")


def tiny_siglip_llava(folder: Path, hidden_size: int, intermediate_size: int):
    """A 2-block SigLIP LLaVA ('full', feature layer -1: every patch, every block) with N(0, 0.2) weights,
    saved to ``folder`` with a preprocessor config; returns the model."""
    import torch
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    torch.manual_seed(0)
    vision = SiglipVisionConfig(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=2,
                                num_attention_heads=4, image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=4)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         vision_feature_select_strategy="full", image_token_index=63)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return model


@pytest.mark.llamacpp
def test_siglip_full_last_layer_with_square_ffn(tmp_path):
    """The demo VLM's layout (SigLIP, 'full', feature layer -1: every patch, every block) with
    intermediate_size == hidden_size, where mtmd's up/down swap kicks in: still exact."""
    import llama_cpp  # noqa: F401  (missing fails, never skips)

    model = tiny_siglip_llava(tmp_path / "hf", 32, 32)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    result = M.write_mmproj(tmp_path / "hf", cfg, None, tmp_path / "out" / "mmproj.gguf")
    assert result.metadata["clip.vision.block_count"] == 2 and not any("deepest" in r for r in result.dropped.values())
    report = verify_image_embeddings(tmp_path / "hf", tmp_path / "out", model=model)
    assert report["n_tokens"] == report["n_tokens_transformers"] == report["matched_tokens"] == 16
    assert report["cosine"] > 1 - 1e-6 and report["cosine_emulated"] > 1 - 1e-8, report
    assert report["max_abs_diff_emulated"] <= 5e-4 * report["ref_max_abs_emulated"], report


@pytest.mark.llamacpp
def test_decode_image_feeds_the_language_model_like_transformers(zoo, hf_models, tmp_path):
    """``decode_image`` equals mtmd's own helper bit for bit on mtmd's rows; fed transformers' layout
    (SigLIP 'default': 15 rows, not mtmd's 16) the LM's logits after the image match transformers to the
    image embeddings' own precision, 100x closer than with mtmd's extra row."""
    import ctypes

    import llama_cpp
    import torch
    from llama_cpp import mtmd_cpp

    from vlmkit.convert import convert
    from vlmkit.eval.image_parity import _normalize, test_image
    from vlmkit.llamacpp.mtmd import MtmdEncoder, decode_image

    model_dir = zoo("llava-calm2-siglip")
    result = convert(model_dir, tmp_path / "out", dtype="f32", verify=False)
    model = llama_cpp.llama_model_load_from_file(str(result.model_path).encode(),
                                                 llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 128, 2, 2
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
    text = [5, 17, 9]

    def logits_after(feed_image) -> np.ndarray:
        lctx = llama_cpp.llama_init_from_model(model, params)
        try:
            n_past = feed_image(lctx)
            batch = llama_cpp.llama_batch_init(len(text), 0, 1)
            batch.n_tokens = len(text)
            for i, token in enumerate(text):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, n_past + i, 1, 1
                batch.seq_id[i][0] = 0
            assert llama_cpp.llama_decode(lctx, batch) == 0
            llama_cpp.llama_batch_free(batch)
            return np.stack([np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx, i), shape=(n_vocab,))
                             for i in range(len(text))])
        finally:
            llama_cpp.llama_free(lctx)

    image = test_image(56)
    with MtmdEncoder(result.mmproj_path, result.model_path) as enc:
        rows, hf_rows = enc.encode(image), enc.encode(image, transformers_layout=True)

        def helper(lctx) -> int:
            chunks = mtmd_cpp.mtmd_input_chunks_init()
            bitmap = mtmd_cpp.mtmd_bitmap_init(56, 56, image.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
            enc.mtmd._image_chunk(bitmap, chunks)
            n_past = llama_cpp.llama_pos(0)
            status = mtmd_cpp.mtmd_helper_eval_chunks(enc.mtmd.ctx, lctx, chunks, 0, 0, 64, False, ctypes.byref(n_past))
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            mtmd_cpp.mtmd_bitmap_free(bitmap)
            assert status == 0
            return n_past.value

        theirs = logits_after(helper)
    ours_raw = logits_after(lambda lctx: decode_image(lctx, rows, 0, 64))
    ours = logits_after(lambda lctx: decode_image(lctx, hf_rows, 0, 64))
    llama_cpp.llama_model_free(model)
    assert np.array_equal(ours_raw, theirs)

    image_token = json.loads((model_dir / "config.json").read_text())["image_token_index"]
    ids = torch.tensor([[image_token] * len(hf_rows) + text])
    pixels = _normalize(image, *M.image_normalization(model_dir))
    with torch.no_grad():
        ref = hf_models["siglip"](input_ids=ids, pixel_values=pixels).logits[0, len(hf_rows):].numpy()
    exact, extra_row = np.abs(ours - ref).max(), np.abs(ours_raw - ref).max()
    assert exact < 2e-3 * np.abs(ref).max() and extra_row > 20 * exact, (exact, extra_row)
    assert (ours.argmax(1) == ref.argmax(1)).all()


@pytest.mark.parametrize("name", ["llava-calm2-siglip", "llava-clip", "llava-string-template"])
def test_mmproj_reads_config_and_processor_json_as_transformers_does(zoo, name):
    """The mmproj's hyper-parameters and image-processor JSON come from the checkpoint's JSON files (transformers'
    config and image-processor classes import torch); they equal what those classes give, so the files
    ``convert`` writes are the ones it wrote through transformers."""
    from transformers import AutoImageProcessor

    from vlmkit.families import family_for
    from vlmkit.families.base import config_value

    model_dir = zoo(name)
    config = json.loads((model_dir / "config.json").read_text())
    mmproj = family_for(config)[0].mmproj
    as_is = M.full_config(model_dir, config, mmproj)
    completed = M.full_config(model_dir, config, mmproj, complete=True)
    assert as_is is config   # transformers 5 saved every field: used as it is
    assert {k: config_value(as_is, k) for k in mmproj.config_required} == \
        {k: config_value(completed, k) for k in mmproj.config_required}
    assert M.image_processor_json(model_dir) == AutoImageProcessor.from_pretrained(model_dir).to_json_string()


def test_incomplete_config_is_completed_by_transformers(tiny_dir):
    """A transformers-4 style config.json (non-default values only) still gets transformers' defaults."""
    config = _tiny_config()   # no tower eps / activation, no projector activation
    hp = M.vision_hparams(tiny_dir, config)
    assert hp["eps"] == 1e-6 and hp["tower_act"] == "gelu"   # SiglipVisionConfig's defaults
    assert hp["approximations"] == ["projector_hidden_act 'gelu' (erf) runs as ggml's tanh GELU"]  # LlavaConfig's
