"""VILA-1.5 replica (Efficient-Large-Model/VILA1.5-3b layout), a custom-code checkpoint as plain files.

The hub repos hold no top-level weights: ``config.json`` (``architectures: ["LlavaLlamaModel"]``,
``model_type: "llava_llama"``, with ``llm_cfg`` / ``vision_tower_cfg`` / ``mm_projector_cfg``) and
three sub-folders, each a checkpoint of its own:

* ``llm/``: a LlamaForCausalLM (keys ``model.*``, ``lm_head.weight``) with its sentencepiece tokenizer;
* ``vision_tower/``: a SiglipVisionModel (keys ``vision_model.*``) with preprocessor_config.json;
* ``mm_projector/``: VILA's ``mlp_downsample`` projector (keys ``layers.{1,2,4}.*``): 2x2 patch
  merge (odd grids padded), LayerNorm(4*C), Linear(4*C, H), GELU, Linear(H, H).

In memory VILA names them ``llm.*``, ``vision_tower.vision_tower.*`` and ``mm_projector.*``. The
projector is built here from torch modules by hand because its code lives only in VILA's repo,
which we never execute. 70-pixel images with 14-pixel patches give an odd 5x5 grid, like the real
384/14 = 27x27, so the padding path of the 2x2 merge is exercised.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.zoo import common
from vlmkit.zoo.llava import llama_sp_tokenizer
from vlmkit.zoo.tokenizers import save_tokenizer

IMAGE_SIZE = 70
PATCH_SIZE = 14
VISION_HIDDEN = 64
HIDDEN = 256


def _llm(out: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer, sp_model = llama_sp_tokenizer(out / ".sp")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5,
        initializer_range=common.TEXT_INIT_RANGE, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    model = common.make_model(LlamaForCausalLM, config, common.ordinary_ids(tokenizer))
    common.save_model(model, out / "llm", {"bos_token_id": 1, "eos_token_id": 2})
    save_tokenizer(tokenizer, out / "llm", sp_model)
    common.remove_tree(out / ".sp")
    return _sub_config(out / "llm", "./llm")


def _vision_tower(out: Path) -> dict:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=VISION_HIDDEN, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
    )
    model = common.make_model(SiglipVisionModel, config, seed=common.SEED + 1)
    common.save_model(model, out / "vision_tower")
    common.rename_prefixes(out / "vision_tower" / "model.safetensors", {"": "vision_model."})
    SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3,
    ).save_pretrained(str(out / "vision_tower"))
    return _sub_config(out / "vision_tower", "./vision_tower")


def projector_modules(vision_hidden: int = VISION_HIDDEN, hidden: int = HIDDEN):
    """VILA's ``mlp_downsample`` as a ``torch.nn.Sequential`` with the same indices (0 = the merge)."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Identity(),  # DownSampleBlock: parameter-free 2x2 merge
        torch.nn.LayerNorm(vision_hidden * 4),
        torch.nn.Linear(vision_hidden * 4, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, hidden),
    )


def _mm_projector(out: Path) -> dict:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(common.SEED + 2)
    layers = projector_modules()
    with torch.no_grad():
        for param in layers.parameters():
            param.copy_(param.to(torch.bfloat16).to(torch.float32))
    tensors = {f"layers.{k}": v.contiguous() for k, v in layers.state_dict().items()}
    (out / "mm_projector").mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "mm_projector" / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "_name_or_path": "./mm_projector",
        "architectures": ["MultimodalProjector"],
        "mm_projector_type": "mlp_downsample",
        "model_type": "v2l_projector",
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
    }
    common.write_json(out / "mm_projector" / "config.json", config)
    return config


def _sub_config(folder: Path, name: str) -> dict:
    import json

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["_name_or_path"] = name
    return config


def build_vila(out: Path) -> None:
    config = {
        "_name_or_path": "./vlm",
        "architectures": ["LlavaLlamaModel"],
        "model_type": "llava_llama",
        "llm_cfg": _llm(out),
        "vision_tower_cfg": _vision_tower(out),
        "mm_projector_cfg": _mm_projector(out),
        "hidden_size": HIDDEN,
        "mm_hidden_size": VISION_HIDDEN,
        "image_aspect_ratio": "resize",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_lr": None,
        "vision_tower_lr": None,
        "vision_resolution": -1,
        "interpolate_mode": "linear",
        "drop_path_rate": 0.0,
        "num_video_frames": 8,
        "fps": 0.0,
        "s2": False,
        "s2_scales": "336,672,1008",
        "s2_max_split_size": 336,
        "tune_language_model": True,
        "tune_mm_projector": True,
        "tune_vision_tower": True,
        "model_dtype": "torch.float32",
        "resume_path": None,
        "transformers_version": "4.36.2",
    }
    common.write_json(out / "config.json", config)
