"""Llama and Llama-architecture LMs (calm2, Vicuna ...): ``LlamaForCausalLM``."""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="llama",
    model_types=("llama",),
    architectures=("LlamaForCausalLM", "LlamaModel"),
    hf_class="LlamaForCausalLM",
    components={"model.": LANGUAGE_MODEL, "lm_head.": HEAD},
    tied={"lm_head.weight": "model.embed_tokens.weight"},
    gguf_arch="llama",
    # llama.cpp applies RoPE to adjacent pairs, HF to the two halves: reorder Q/K rows (LlamaModel.permute)
    gguf_transforms={
        r"\.self_attn\.q_proj\.(weight|bias)$": "rope_permute_q",
        r"\.self_attn\.k_proj\.(weight|bias)$": "rope_permute_k",
    },
    config_fields=(
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "rope_theta",
        "rms_norm_eps",
        "tie_word_embeddings",
    ),
)
