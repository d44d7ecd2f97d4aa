"""Model families, one module each, found by import: ``vlmkit.families.<model_type>``.

A checkpoint whose ``model_type`` has no module (VILA's ``llava_llama`` shares none with
transformers) is matched on ``config["architectures"]`` against every family's declaration, and an
unknown one gets a family guessed from tensor-name prefixes (``guessed=True``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from vlmkit.families.base import (
    HEAD,
    LANGUAGE_MODEL,
    PROJECTOR,
    VISION_TOWER,
    Family,
)

__all__ = ["Family", "all_families", "family_for", "family_for_gguf_arch", "family_hook", "guess_family", "text_dir"]


def _module(module_name: str) -> Any:
    try:
        return importlib.import_module(f"vlmkit.families.{module_name}")
    except ModuleNotFoundError as error:
        if error.name == f"vlmkit.families.{module_name}":
            return None
        raise


def _load(module_name: str) -> Family | None:
    return getattr(_module(module_name), "FAMILY", None)


def family_hook(family: Family, name: str) -> Callable[..., Any] | None:
    """The hook ``name`` that the family's module defines (``gguf_kv`` ...), None when it has none."""
    return getattr(_module(family.name), name, None) if family.name.isidentifier() else None


def family_for_gguf_arch(arch: str) -> Family | None:
    """The language-model family whose GGUF export writes architecture ``arch`` ("gptneox")."""
    return next((family for family in all_families() if family.gguf_arch == arch), None)


def text_dir(model_dir: Path, family: Family) -> Path:
    """The folder with the language model's own config / tokenizer: ``family.text_subdir`` when the
    checkpoint has it (VILA-1.5's ``llm/``), else the model directory."""
    if family.text_subdir and (Path(model_dir) / family.text_subdir).is_dir():
        return Path(model_dir) / family.text_subdir
    return Path(model_dir)


def all_families() -> list[Family]:
    names = (m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
    return [f for f in map(_load, names) if f is not None]


def family_for(config: dict[str, Any], tensor_names: Iterable[str] = ()) -> tuple[Family, bool]:
    """Return (family, guessed) for a config.json dict; guessed=True when no family declares it."""
    architectures = set(config.get("architectures") or ())
    for family in all_families():
        if architectures & set(family.architectures):
            return family, False
    model_type = str(config.get("model_type", ""))
    if model_type and (family := _load(model_type)) is not None:
        return family, False
    for family in all_families():
        if model_type in family.model_types:
            return family, False
    names = list(tensor_names)
    for family in all_families():
        if family.signature and any(n.startswith(family.signature) for n in names):
            return family, False
    return guess_family(model_type or "unknown", names), True


# Prefix words that betray a component in checkpoints of unknown families.
_GUESS_WORDS = {
    VISION_TOWER: ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder", "vit"),
    PROJECTOR: ("multi_modal_projector", "mm_projector", "projector", "connector", "vision_proj", "merger"),
    HEAD: ("lm_head", "output", "head", "cls", "pooler", "score"),
}


def guess_family(model_type: str, tensor_names: Iterable[str]) -> Family:
    """Build a family from the first path segments of the tensor names; the rest is the LM."""
    components: dict[str, str] = {}
    for name in tensor_names:
        parts = name.split(".")
        for depth in (1, 2):
            prefix = ".".join(parts[:depth]) + "."
            segment = parts[depth - 1] if len(parts) > depth else ""
            for component, words in _GUESS_WORDS.items():
                if segment in words or (component != HEAD and any(w in segment for w in words)):
                    components.setdefault(prefix, component)
        components.setdefault(parts[0] + ".", LANGUAGE_MODEL)
    return Family(name=model_type, model_types=(model_type,), components=components)
