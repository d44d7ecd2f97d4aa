"""LLaVA-codebase checkpoints with custom code (``model_type: llava_llama``): VILA-1.5 and liuhaotian's LLaVA.

Their modelling code lives in the checkpoint and is never executed: vlmkit reads the weights only.
VILA-1.5 stores each part in its own subfolder (``llm/``, ``vision_tower/``, ``mm_projector/``), which
the reader exposes under those prefixes; original LLaVA keeps one folder with ``model.mm_projector.*``.
"""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER, Family

FAMILY = Family(
    name="llava_llama",
    model_types=("llava_llama",),
    architectures=("LlavaLlamaModel", "LlavaLlamaForCausalLM"),
    text_config="llm_cfg",
    vision_config="vision_tower_cfg",
    custom_code=True,
    text_subdir="llm",
    components={
        # VILA-1.5
        "llm.": LANGUAGE_MODEL,
        "llm.lm_head.": HEAD,
        "vision_tower.": VISION_TOWER,
        "mm_projector.": PROJECTOR,
        # original LLaVA (liuhaotian/llava-v1.5-*)
        "model.": LANGUAGE_MODEL,
        "model.vision_tower.": VISION_TOWER,
        "model.mm_projector.": PROJECTOR,
        "lm_head.": HEAD,
    },
    tied={"llm.lm_head.weight": "llm.model.embed_tokens.weight", "lm_head.weight": "model.embed_tokens.weight"},
    lm_prefixes={"llm.": "", "model.": "model.", "lm_head.": "lm_head."},  # GGUF export: LM names as in Llama
    config_fields=(
        "llm_cfg.architectures",
        "llm_cfg.hidden_size",
        "llm_cfg.num_hidden_layers",
        "vision_tower_cfg.architectures",
        "mm_projector_cfg.mm_projector_type",
        "mm_projector_type",
        "mm_vision_select_layer",
        "mm_vision_select_feature",
        "image_aspect_ratio",
        "hidden_size",
    ),
)
