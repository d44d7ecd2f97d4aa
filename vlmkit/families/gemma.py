"""Gemma (``GemmaForCausalLM``): the LM head is tied to the embeddings."""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="gemma",
    model_types=("gemma",),
    architectures=("GemmaForCausalLM",),
    hf_class="GemmaForCausalLM",
    components={"model.": LANGUAGE_MODEL, "lm_head.": HEAD},
    tied={"lm_head.weight": "model.embed_tokens.weight"},
    buffers=(r"\.rotary_emb\.inv_freq$", r"embed_scale$"),
    config_fields=(
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
    ),
)
