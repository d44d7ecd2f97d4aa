"""Per-architecture GGUF metadata: llama.cpp's ``{arch}.*`` keys from the text config.

The config is first normalised through transformers' own config class (no remote code), so defaults
the checkpoint leaves out and renamed fields are filled the way transformers reads them: a GPT-NeoX
config saved by transformers 5 has ``rope_parameters.partial_rotary_factor`` and no ``rotary_pct``
(the KeyError llama.cpp's converter stops on); an older one has ``rotary_pct`` and gets it converted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gguf

from vlmkit.errors import UnsupportedError
from vlmkit.families.base import Family


def text_config(model_dir: Path, family: Family, config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config with transformers' defaults filled in."""
    cfg = family.text_cfg(config) if family.text_config else config
    if not cfg and (Path(model_dir) / "llm" / "config.json").exists():  # VILA-1.5: llm/config.json
        cfg = json.loads((Path(model_dir) / "llm" / "config.json").read_text())
    return normalize(cfg)


# Fields read for each model type; a config that has them all skips transformers (a 2-5 s import).
REQUIRED = {
    "llama": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
              "max_position_embeddings"),
    "gpt_neox": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                 "max_position_embeddings", "layer_norm_eps"),
}


def normalize(cfg: dict[str, Any]) -> dict[str, Any]:
    model_type = cfg.get("model_type")
    if all(key in cfg for key in REQUIRED.get(model_type, ("-",))) and _rope_explicit(cfg, model_type):
        return dict(cfg)
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        return dict(cfg)
    keep = {k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version", "architectures")}
    full = CONFIG_MAPPING[model_type](**keep).to_dict()
    full.setdefault("architectures", cfg.get("architectures"))
    return full


def _rope_explicit(cfg: dict[str, Any], model_type: str) -> bool:
    """GPT-NeoX's rotary fraction has a non-obvious default (0.25): leave it to transformers if absent."""
    if model_type != "gpt_neox":
        return True
    rope = cfg.get("rope_parameters") or {}
    return any(k in cfg for k in ("rotary_pct", "partial_rotary_factor")) or "partial_rotary_factor" in rope


def _rope(cfg: dict[str, Any]) -> dict[str, Any]:
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


def _add_rope_scaling(writer: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind in (None, "default"):
        return
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
        return
    raise UnsupportedError(None, f"RoPE scaling '{kind}' is not supported by vlmkit's GGUF export yet")


def llama_kv(writer: gguf.GGUFWriter, cfg: dict[str, Any], hp: dict[str, Any]) -> None:
    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedError(None, f"llama with hidden_act={cfg['hidden_act']!r}: llama.cpp's llama graph is SiLU")
    rope = _rope(cfg)
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
    _add_rope_scaling(writer, rope)


def gptneox_kv(writer: gguf.GGUFWriter, cfg: dict[str, Any], hp: dict[str, Any]) -> None:
    if not str(cfg.get("hidden_act", "gelu")).startswith("gelu"):
        raise UnsupportedError(None, f"gpt_neox with hidden_act={cfg['hidden_act']!r}: llama.cpp uses GELU")
    rope = _rope(cfg)
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
    _add_rope_scaling(writer, rope)


def _no_fix(plan, source, dtype) -> None:
    pass


def gptneox_output(plan, source, dtype) -> None:
    """llama.cpp's GPT-NeoX graph requires ``output.weight``; a tied checkpoint has only embed_in."""
    names = {t.name for t in plan.tensors}
    if "output.weight" in names:
        return
    embd = next(t for t in plan.tensors if t.name == "token_embd.weight")
    plan.tensors.append(replace(embd, name="output.weight"))


@dataclass(frozen=True)
class ArchHparams:
    add_kv: Callable[[gguf.GGUFWriter, dict[str, Any], dict[str, Any]], None]
    fix_tensors: Callable[..., None] = _no_fix


HPARAMS: dict[str, ArchHparams] = {
    "llama": ArchHparams(llama_kv),
    "gptneox": ArchHparams(gptneox_kv, gptneox_output),
}
