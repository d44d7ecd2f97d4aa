"""GPT-NeoX (``GPTNeoXForCausalLM``): OpenCALM, Pythia. Fused QKV, partial rotary, untied ``embed_out``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vlmkit.errors import UnsupportedError
from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="gpt_neox",
    model_types=("gpt_neox",),
    architectures=("GPTNeoXForCausalLM",),
    hf_class="GPTNeoXForCausalLM",
    components={"gpt_neox.": LANGUAGE_MODEL, "embed_out.": HEAD, "lm_head.": HEAD},
    tied={"embed_out.weight": "gpt_neox.embed_in.weight"},
    gguf_arch="gptneox",
    gguf_runtime_note="ggml evaluates GELU through an fp16 lookup table on CPU",
    # the rotary fraction has a non-obvious default (0.25): without it, transformers' config class decides
    config_required=("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                     "max_position_embeddings", "layer_norm_eps",
                     ("rotary_pct", "partial_rotary_factor", "rope_parameters.partial_rotary_factor")),
    # HF interleaves q,k,v per head; llama.cpp's fused QKV is [all q; all k; all v]
    gguf_transforms={r"\.attention\.query_key_value\.(weight|bias)$": "neox_qkv_regroup"},
    config_fields=(
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
        "rotary_pct",
        "partial_rotary_factor",
        "use_parallel_residual",
        "tie_word_embeddings",
    ),
)


def gguf_kv(writer: Any, cfg: dict[str, Any], hp: dict[str, Any]) -> None:
    """llama.cpp's ``gptneox.*`` keys: partial rotary, parallel residual, LayerNorm eps."""
    from vlmkit.gguf.hparams import add_rope_scaling, rope_parameters

    if not str(cfg.get("hidden_act", "gelu")).startswith("gelu"):
        raise UnsupportedError(None, f"gpt_neox with hidden_act={cfg['hidden_act']!r}: llama.cpp uses GELU")
    rope = rope_parameters(cfg)
    factor = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct", 1.0)))
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_block_count(hp["n_layer"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_rope_dimension_count(int(factor * hp["head_dim"]))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_head_count(hp["n_head"])
    writer.add_parallel_residual(bool(cfg.get("use_parallel_residual", True)))
    writer.add_layer_norm_eps(cfg.get("layer_norm_eps", 1e-5))
    add_rope_scaling(writer, rope)


def gguf_fix_tensors(plan: Any) -> None:
    """llama.cpp's GPT-NeoX graph requires ``output.weight``; a tied checkpoint has only embed_in."""
    if any(t.name == "output.weight" for t in plan.tensors):
        return
    embd = next(t for t in plan.tensors if t.name == "token_embd.weight")
    plan.tensors.append(replace(embd, name="output.weight"))
