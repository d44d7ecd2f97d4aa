"""GPT-NeoX (``GPTNeoXForCausalLM``): OpenCALM, Pythia. Fused QKV, partial rotary, untied ``embed_out``."""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="gpt_neox",
    model_types=("gpt_neox",),
    architectures=("GPTNeoXForCausalLM",),
    hf_class="GPTNeoXForCausalLM",
    components={"gpt_neox.": LANGUAGE_MODEL, "embed_out.": HEAD, "lm_head.": HEAD},
    tied={"embed_out.weight": "gpt_neox.embed_in.weight"},
    gguf_arch="gptneox",
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
