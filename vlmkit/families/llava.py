"""LLaVA (transformers ``LlavaForConditionalGeneration``): llava-1.5 (CLIP) and llava-calm2-siglip (SigLIP).

Checkpoints on disk use the transformers-4 layout (``language_model.model.*``), which transformers 5
still writes; in memory transformers 5 names them ``model.language_model.*``. Both are listed.
"""

from vlmkit.families.base import HF_VLM_COMPONENTS, HF_VLM_TIED, Family

FAMILY = Family(
    name="llava",
    model_types=("llava",),
    architectures=("LlavaForConditionalGeneration",),
    hf_class="LlavaForConditionalGeneration",
    text_config="text_config",
    vision_config="vision_config",
    components=HF_VLM_COMPONENTS,
    tied=HF_VLM_TIED,
    mmproj_towers={"siglip_vision_model": False, "clip_vision_model": True},   # tower -> has a CLS token
    # GGUF export: LM tensors renamed to the text family's own names (transformers 4 and 5 layouts)
    lm_prefixes={"language_model.": "", "model.language_model.": "model.", "lm_head.": "lm_head."},
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
