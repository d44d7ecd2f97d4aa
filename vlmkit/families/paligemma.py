"""PaliGemma (transformers ``PaliGemmaForConditionalGeneration``): SigLIP tower, one linear projector, Gemma LM.

The LM head is tied to the token embeddings, so HF checkpoints carry no ``lm_head`` tensor.
"""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER, Family

FAMILY = Family(
    name="paligemma",
    model_types=("paligemma",),
    architectures=("PaliGemmaForConditionalGeneration",),
    hf_class="PaliGemmaForConditionalGeneration",
    text_config="text_config",
    vision_config="vision_config",
    components={
        "vision_tower.": VISION_TOWER,
        "model.vision_tower.": VISION_TOWER,
        "multi_modal_projector.": PROJECTOR,
        "model.multi_modal_projector.": PROJECTOR,
        "language_model.model.": LANGUAGE_MODEL,
        "model.language_model.": LANGUAGE_MODEL,
        "language_model.lm_head.": HEAD,
        "lm_head.": HEAD,
        # big_vision JAX checkpoints (.npz): stacked per-layer tensors under params/
        "params/img/": VISION_TOWER,
        "params/img/head/": PROJECTOR,
        "params/llm/": LANGUAGE_MODEL,
    },
    signature=("params/img/", "params/llm/"),
    tied={
        "language_model.lm_head.weight": "language_model.model.embed_tokens.weight",
        "lm_head.weight": "model.language_model.embed_tokens.weight",
    },
    buffers=(r"position_ids$", r"\.rotary_emb\.inv_freq$", r"embed_scale$"),
    config_fields=(
        "vision_config.image_size",
        "vision_config.patch_size",
        "vision_config.hidden_size",
        "vision_config.num_hidden_layers",
        "projection_dim",
        "image_token_index",
        "text_config.model_type",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.num_key_value_heads",
        "text_config.head_dim",
        "text_config.vocab_size",
    ),
)
