"""LLaVA (transformers ``LlavaForConditionalGeneration``): llava-1.5 (CLIP) and llava-calm2-siglip (SigLIP).

Checkpoints on disk use the transformers-4 layout (``language_model.model.*``), which transformers 5
still writes; in memory transformers 5 names them ``model.language_model.*``. Both are listed.

The export rule (:func:`export_name`): the hub layout is the only one that vLLM, transformers 4.x and
transformers 5 all load. transformers 5 saves a SigLIP tower as ``vision_tower.embeddings.*`` (vLLM: "There is
no module or parameter named 'vision_tower.embeddings'"; transformers 4 ignores the weights), and may save
its in-memory ``model.language_model.*`` names, which transformers 4 does not read.
"""

from typing import Any

from vlmkit.families.base import HF_VLM_COMPONENTS, HF_VLM_DISK_NAMES, HF_VLM_TIED, Family, MmprojMap

# mmproj.gguf for llama.cpp's mtmd (vlmkit.gguf.mmproj): CLIP / SigLIP tower + LLaVA's 2-layer MLP projector
_LAYER = r"encoder\.layers\.(?P<bid>\d+)\."
_WB = r"\.(?P<kind>weight|bias)$"
MMPROJ = MmprojMap(
    towers={"siglip_vision_model": False, "clip_vision_model": True},
    tower_prefixes=("model.vision_tower.vision_model.", "model.vision_tower.",
                    "vision_tower.vision_model.", "vision_tower."),
    projector_prefixes=("model.multi_modal_projector.", "multi_modal_projector."),
    layer=_LAYER,
    tower=(
        (r"^embeddings\.class_embedding$", "V_ENC_EMBD_CLS"),
        (r"^embeddings\.patch_embedding" + _WB, "V_ENC_EMBD_PATCH"),
        (r"^embeddings\.position_embedding" + _WB, "V_ENC_EMBD_POS"),
        (r"^pre_layrnorm" + _WB, "V_PRE_NORM"),
        ("^" + _LAYER + r"layer_norm1" + _WB, "V_ENC_INPUT_NORM"),
        ("^" + _LAYER + r"layer_norm2" + _WB, "V_ENC_POST_ATTN_NORM"),
        ("^" + _LAYER + r"self_attn\.q_proj" + _WB, "V_ENC_ATTN_Q"),
        ("^" + _LAYER + r"self_attn\.k_proj" + _WB, "V_ENC_ATTN_K"),
        ("^" + _LAYER + r"self_attn\.v_proj" + _WB, "V_ENC_ATTN_V"),
        ("^" + _LAYER + r"self_attn\.out_proj" + _WB, "V_ENC_ATTN_O"),
        ("^" + _LAYER + r"mlp\.fc1" + _WB, "V_ENC_FFN_UP"),
        ("^" + _LAYER + r"mlp\.fc2" + _WB, "V_ENC_FFN_DOWN"),
    ),
    projector=((r"^linear_1" + _WB, 0), (r"^linear_2" + _WB, 2)),
    tower_drop={
        r"^post_layernorm\.": "final tower norm: LLaVA reads hidden_states[feature_layer], taken before it",
        r"^head\.": "SigLIP attention-pool head: makes the pooled output, which LLaVA does not use",
        r"position_ids$": "saved buffer (arange), not a parameter",
    },
    config_required=tuple(f"vision_config.{key}" for key in (
        "model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
        "layer_norm_eps", "hidden_act", "image_size", "patch_size")) + (
        "text_config.hidden_size", "vision_feature_layer", "vision_feature_select_strategy", "projector_hidden_act"),
)

# Towers that transformers wraps as ``XVisionModel(vision_model=XVisionTransformer)``: vLLM builds the same
# wrapper, so their tensors belong under ``vision_tower.vision_model.``.
WRAPPED_TOWERS = ("clip_vision_model", "siglip_vision_model")
TOWER, WRAPPED = "vision_tower.", "vision_tower.vision_model."


def export_name(name: str, config: dict[str, Any]) -> str:
    """The hub-layout name of a LLaVA tensor, whichever transformers version named it."""
    for old, new in HF_VLM_DISK_NAMES.items():  # transformers 5's in-memory names -> the hub layout
        if name.startswith(old):
            name = new + name[len(old):]
            break
    tower = (config.get("vision_config") or {}).get("model_type", "clip_vision_model")
    if tower in WRAPPED_TOWERS and name.startswith(TOWER) and not name.startswith(WRAPPED):
        name = WRAPPED + name[len(TOWER):]
    return name


FAMILY = Family(
    name="llava",
    model_types=("llava",),
    architectures=("LlavaForConditionalGeneration",),
    hf_class="LlavaForConditionalGeneration",
    text_config="text_config",
    vision_config="vision_config",
    components=HF_VLM_COMPONENTS,
    tied=HF_VLM_TIED,
    mmproj=MMPROJ,
    # GGUF export: LM tensors renamed to the text family's own names (transformers 4 and 5 layouts)
    lm_prefixes={"language_model.": "", "model.language_model.": "model.", "lm_head.": "lm_head."},
    hf_export_name=export_name,
    config_fields=(
        "vision_config.model_type",
        "vision_config.image_size",
        "vision_config.patch_size",
        "vision_config.hidden_size",
        "vision_config.num_hidden_layers",
        "vision_feature_layer",
        "vision_feature_select_strategy",
        "projector_hidden_act",
        "image_token_index",
        "image_token_id",
        "text_config.model_type",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.num_key_value_heads",
        "text_config.vocab_size",
        "text_config.max_position_embeddings",
    ),
)
