"""PaliGemma (transformers ``PaliGemmaForConditionalGeneration``): SigLIP tower, one linear projector, Gemma LM.

The LM head is tied to the token embeddings, so HF checkpoints carry no ``lm_head`` tensor.
"""

from vlmkit.families.base import HF_VLM_COMPONENTS, HF_VLM_TIED, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER, Family

FAMILY = Family(
    name="paligemma",
    model_types=("paligemma",),
    architectures=("PaliGemmaForConditionalGeneration",),
    hf_class="PaliGemmaForConditionalGeneration",
    text_config="text_config",
    vision_config="vision_config",
    components={
        **HF_VLM_COMPONENTS,
        # big_vision JAX checkpoints (.npz): stacked per-layer tensors under params/
        "params/img/": VISION_TOWER,
        "params/img/head/": PROJECTOR,
        "params/llm/": LANGUAGE_MODEL,
    },
    signature=("params/img/", "params/llm/"),
    tied=HF_VLM_TIED,
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
