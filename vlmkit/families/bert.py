"""BERT encoders (``BertModel``; sentence-transformers' all-MiniLM-L6-v2). No LM head: a pooler."""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, Family

FAMILY = Family(
    name="bert",
    model_types=("bert",),
    architectures=("BertModel", "BertForMaskedLM"),
    hf_class="BertModel",
    components={
        "embeddings.": LANGUAGE_MODEL,
        "encoder.": LANGUAGE_MODEL,
        "bert.embeddings.": LANGUAGE_MODEL,
        "bert.encoder.": LANGUAGE_MODEL,
        "pooler.": HEAD,
        "bert.pooler.": HEAD,
        "cls.": HEAD,
    },
    buffers=(r"position_ids$", r"token_type_ids$"),
    config_fields=(
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "vocab_size",
        "max_position_embeddings",
    ),
)
