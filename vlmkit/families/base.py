"""What a model family declares: its components, layer layout and the config fields worth showing.

A family module (``vlmkit/families/<model_type>.py``) holds one ``FAMILY = Family(...)`` and, where
data is not enough, small hooks found by name (``gguf_kv(writer, cfg, hp)``, ``gguf_fix_tensors(plan)``,
see ``vlmkit.families.family_hook``) or named by its declarations (PaliGemma's big_vision weight map infers
a config from shapes, writes a processor), like mlx-lm's ``sanitize()``. Generic code (inspect, convert,
run, diff, quantize) reads these declarations and never tests a model_type itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Canonical component names, in display order.
VISION_TOWER = "vision_tower"
PROJECTOR = "projector"
LANGUAGE_MODEL = "language_model"
HEAD = "head"
OTHER = "other"
COMPONENT_ORDER = (VISION_TOWER, PROJECTOR, LANGUAGE_MODEL, HEAD, OTHER)

# Non-parameter tensors that older checkpoints saved (buffers): never counted as parameters.
COMMON_BUFFERS = (r"\.rotary_emb\.inv_freq$", r"position_ids$", r"\.masked_bias$", r"\.attention\.bias$")


# transformers' VLM classes (LLaVA, PaliGemma ...): the on-disk layout, which transformers 5 still writes,
# next to transformers 5's in-memory names.
HF_VLM_COMPONENTS = {
    "vision_tower.": VISION_TOWER,
    "model.vision_tower.": VISION_TOWER,
    "multi_modal_projector.": PROJECTOR,
    "model.multi_modal_projector.": PROJECTOR,
    "language_model.model.": LANGUAGE_MODEL,
    "model.language_model.": LANGUAGE_MODEL,
    "language_model.lm_head.": HEAD,
    "lm_head.": HEAD,
}
# transformers 5's in-memory names -> the on-disk names above (its conversion_mapping "llava" rules, reversed)
HF_VLM_DISK_NAMES = {
    "model.language_model.": "language_model.model.",
    "model.vision_tower.": "vision_tower.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "lm_head.": "language_model.lm_head.",
}
HF_VLM_TIED = {
    "language_model.lm_head.weight": "language_model.model.embed_tokens.weight",
    "lm_head.weight": "model.language_model.embed_tokens.weight",
}


@dataclass(frozen=True)
class MmprojMap:
    """How a VLM's vision tower and projector become mtmd's mmproj tensors; regexes on the name after
    the prefix, gguf-py ``MODEL_TENSOR`` member names (resolved by the writer, so loading a family does
    not import gguf-py)."""

    towers: dict[str, bool]                       # vision_config.model_type -> the tower has a CLS token
    tower_prefixes: tuple[str, ...]
    projector_prefixes: tuple[str, ...]
    layer: str                                    # regex of a tower layer's prefix, group "bid"
    tower: tuple[tuple[str, str], ...]            # regex -> MODEL_TENSOR name ({bid}, weight / bias from groups)
    projector: tuple[tuple[str, int], ...]        # regex -> index of mm.{bid}
    tower_drop: dict[str, str] = field(default_factory=dict)   # regex -> why it is not exported
    # Config fields the mmproj export reads (dotted); a config that sets them all is used as it is, one that
    # does not is completed by transformers' config class (whose import costs ~250 MB: it imports torch)
    config_required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Family:
    """Declarative description of one model family."""

    name: str
    model_types: tuple[str, ...]
    # tensor-name prefix -> component; the longest matching prefix wins, so both the on-disk
    # transformers-4 layout and transformers-5's names can be listed side by side.
    components: dict[str, str]
    architectures: tuple[str, ...] = ()           # config["architectures"] values that select this family
    hf_class: str | None = None                   # transformers class used to build the model on meta
    text_config: str | None = None                # sub-config of the language model (None: top level)
    vision_config: str | None = None              # sub-config of the vision tower
    config_fields: tuple[str, ...] = ()           # dotted config keys shown by `inspect`
    buffers: tuple[str, ...] = COMMON_BUFFERS     # regexes of saved non-parameter tensors
    tied: dict[str, str] = field(default_factory=dict)  # tied tensor -> tensor it shares storage with
    tie_flag: str = "tie_word_embeddings"         # config key (in text_config if set) enabling ``tied``
    custom_code: bool = False                     # checkpoint needs remote code: never executed, weights only
    # --- GGUF export (vlmkit.gguf) ---
    gguf_arch: str | None = None                  # gguf-py MODEL_ARCH name of a language model ("llama", "gptneox")
    # wrapper families (VLMs): on-disk LM prefix -> the text family's own prefix, e.g. "language_model." -> ""
    lm_prefixes: dict[str, str] = field(default_factory=dict)
    # regex on the text family's tensor name -> name of a transform in vlmkit.gguf.transforms
    gguf_transforms: dict[str, str] = field(default_factory=dict)
    gguf_drop: dict[str, str] = field(default_factory=dict)  # regex -> why the tensor is not exported
    gguf_runtime_note: str | None = None          # why llama.cpp's output may differ slightly (shown by --verify)
    # Tensor-name prefixes that identify the family when there is no config.json (big_vision .npz, GGUF).
    signature: tuple[str, ...] = ()
    # Other frameworks' layouts as reversible maps to the HF names (vlmkit.families.ops.WeightMap), by format
    weight_maps: dict[str, Any] = field(default_factory=dict)
    # transformers-5 in-memory name prefix -> the on-disk prefix the maps use ("model.language_model." ...)
    name_aliases: dict[str, str] = field(default_factory=dict)
    # Folder holding the language model's own config.json / tokenizer (VILA-1.5: "llm"); None: the top level.
    text_subdir: str | None = None
    # Config fields the GGUF export reads; when one is missing transformers' config class fills the defaults.
    # A tuple inside lists alternatives (any one will do); dotted names reach into sub-dicts.
    config_required: tuple[str | tuple[str, ...], ...] = ()
    # The processor writes the whole prompt itself (PaliGemma's prefix-LM: image tokens + BOS + text + "\n"),
    # so no chat template or <image> placeholder is added around the text.
    processor_builds_prompt: bool = False
    # mmproj.gguf export (mtmd's LLaVA graph): the tower and projector maps; None: no mmproj export
    mmproj: MmprojMap | None = None
    # --- HF export: (tensor name, config.json dict) -> the name every HF consumer accepts (vLLM, transformers
    # 4.x and 5); None keeps names as they are. Every HF writer (convert --to hf, quantize) goes through it.
    hf_export_name: Callable[[str, dict[str, Any]], str] | None = None

    def component_of(self, tensor_name: str) -> str:
        best = max((p for p in self.components if tensor_name.startswith(p)), key=len, default=None)
        return self.components[best] if best is not None else OTHER

    def disk_name(self, tensor_name: str) -> str:
        """The on-disk HF name of a tensor named either way (PEFT adapters and meta models use
        transformers 5's in-memory names)."""
        best = max((p for p in self.name_aliases if tensor_name.startswith(p)), key=len, default=None)
        return tensor_name if best is None else self.name_aliases[best] + tensor_name[len(best):]

    def export_name(self, tensor_name: str, config: dict[str, Any]) -> str:
        """The name an exported HF checkpoint gives this tensor (see ``hf_export_name``)."""
        return self.hf_export_name(tensor_name, config) if self.hf_export_name else tensor_name

    def is_buffer(self, tensor_name: str) -> bool:
        return any(re.search(pattern, tensor_name) for pattern in self.buffers)

    def text_cfg(self, config: dict[str, Any]) -> dict[str, Any]:
        return config.get(self.text_config, {}) if self.text_config else config

    def has_required(self, config: dict[str, Any]) -> bool:
        """Whether ``config`` sets every field of ``config_required`` (one of each tuple of alternatives)."""
        return has_fields(config, self.config_required)

    def ties_active(self, config: dict[str, Any]) -> bool:
        """Whether ``tied`` applies: the flag is looked up in the text config, then the top level
        (transformers defaults it to True)."""
        text = self.text_cfg(config)
        return bool(text.get(self.tie_flag, config.get(self.tie_flag, True)))


def has_fields(config: dict[str, Any], fields: tuple[str | tuple[str, ...], ...]) -> bool:
    """Whether ``config`` sets every dotted field of ``fields`` (a tuple inside lists alternatives)."""
    return all(any(config_value(config, key) is not None for key in ((need,) if isinstance(need, str) else need))
               for need in fields)


def config_value(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
