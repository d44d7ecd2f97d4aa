"""LLaMA-VID (custom code, ``LlavaLlamaAttForCausalLM``): EVA/CLIP tower, Q-Former text-guided attention,
context + content token projectors. Weights only; its remote code is never executed."""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER, Family

FAMILY = Family(
    name="llama_vid",
    model_types=(),  # its config says model_type "llava" (clashes with HF LLaVA): matched on architectures,
    architectures=("LlavaLlamaAttForCausalLM",),
    custom_code=True,
    components={
        "model.": LANGUAGE_MODEL,
        "model.vision_tower.": VISION_TOWER,
        "model.mm_projector.": PROJECTOR,
        "model.vlm_att_": PROJECTOR,   # Q-Former and its query/key/value projections
        "lm_head.": HEAD,
    },
    tied={"lm_head.weight": "model.embed_tokens.weight"},
    config_fields=("hidden_size", "num_hidden_layers", "mm_vision_tower", "mm_projector_type", "bert_type", "num_query"),
)
