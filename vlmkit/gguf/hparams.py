"""GGUF metadata shared by every architecture, and the text config the families' ``gguf_kv`` hooks read.

The per-architecture ``{arch}.*`` keys are written by the family's ``gguf_kv(writer, cfg, hp)`` hook
(``vlmkit/families/llama.py``, ``gpt_neox.py``). The config is first normalised through transformers'
own config class (no remote code), so defaults the checkpoint leaves out and renamed fields are filled
the way transformers reads them: a GPT-NeoX config saved by transformers 5 has
``rope_parameters.partial_rotary_factor`` and no ``rotary_pct`` (the KeyError llama.cpp's converter
stops on); an older one has ``rotary_pct`` and gets it converted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from vlmkit.errors import UnsupportedError
from vlmkit.families import family_for, text_dir
from vlmkit.families.base import Family
from vlmkit.readers.model_files import read_config


def text_config(model_dir: Path, family: Family, config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config with transformers' defaults filled in."""
    cfg = family.text_cfg(config) if family.text_config else config
    folder = text_dir(model_dir, family)
    if not cfg and folder != Path(model_dir):   # VILA-1.5: llm/config.json
        cfg = read_config(folder) or {}
    return normalize(cfg)


def normalize(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` as transformers' config class completes it; as is when it already has every field its
    family's GGUF export reads (importing transformers costs 2-5 s)."""
    family, guessed = family_for(cfg)
    if not guessed and family.config_required and family.has_required(cfg):
        return dict(cfg)
    from transformers import CONFIG_MAPPING

    model_type = cfg.get("model_type")
    if model_type not in CONFIG_MAPPING:
        return dict(cfg)
    keep = {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version", "architectures")}
    full = CONFIG_MAPPING[model_type](**keep).to_dict()
    full.setdefault("architectures", cfg.get("architectures"))
    return full


def rope_parameters(cfg: dict[str, Any]) -> dict[str, Any]:
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope.setdefault("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base", 10000.0)))
    return rope


def base_hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """The sizes transforms and metadata need, under llama.cpp's names."""
    n_head = cfg["num_attention_heads"]
    return {
        "n_layer": cfg["num_hidden_layers"],
        "n_embd": cfg["hidden_size"],
        "n_head": n_head,
        "n_head_kv": cfg.get("num_key_value_heads") or n_head,
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // n_head,
        "n_ctx": cfg.get("max_position_embeddings", 2048),
        "vocab_size": cfg["vocab_size"],
    }


def add_rope_scaling(writer: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in (None, "default"):
        return
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
        return
    raise UnsupportedError(None, f"RoPE scaling '{kind}' is not supported by vlmkit's GGUF export yet")
