"""Llama and Llama-architecture LMs (calm2, Vicuna ...): ``LlamaForCausalLM``."""

from __future__ import annotations

from typing import Any

from vlmkit.errors import UnsupportedError
from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="llama",
    model_types=("llama",),
    architectures=("LlamaForCausalLM", "LlamaModel"),
    hf_class="LlamaForCausalLM",
    components={"model.": LANGUAGE_MODEL, "lm_head.": HEAD},
    tied={"lm_head.weight": "model.embed_tokens.weight"},
    gguf_arch="llama",
    config_required=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                     "max_position_embeddings"),
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


def gguf_kv(writer: Any, cfg: dict[str, Any], hp: dict[str, Any]) -> None:
    """llama.cpp's ``llama.*`` keys."""
    from vlmkit.gguf.hparams import add_rope_scaling, rope_parameters

    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedError(None, f"llama with hidden_act={cfg['hidden_act']!r}: llama.cpp's llama graph is SiLU")
    rope = rope_parameters(cfg)
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_block_count(hp["n_layer"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(hp["n_head"])
    writer.add_head_count_kv(hp["n_head_kv"])
    writer.add_rope_dimension_count(hp["head_dim"])
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(hp["vocab_size"])
    if hp["head_dim"] != hp["n_embd"] // hp["n_head"]:
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    add_rope_scaling(writer, rope)
