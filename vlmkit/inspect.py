"""``vlmkit inspect``: what a checkpoint holds, from its headers and config files alone.

No tensor data is read: shapes and dtypes come from the readers' metadata, components from the
family declaration, the tokenizer summary from its JSON files (no tokenizer code is imported or run).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.families import Family, family_for
from vlmkit.families.base import COMPONENT_ORDER, PROJECTOR, VISION_TOWER, config_value
from vlmkit.hub import resolve_model
from vlmkit.memory import estimate_memory, estimate_run, training_bytes
from vlmkit.readers import open_checkpoint
from vlmkit.readers.base import Checkpoint, TensorInfo
from vlmkit.readers.compressed_tensors import logical_params, quantization_summary
from vlmkit.readers.model_files import read_config as read_config_file
from vlmkit.tokenizer_info import TokenizerSummary, summarize_tokenizer

_INDEX = re.compile(r"(?<=\.)\d+(?=\.)|(?<=/)\d+(?=/)|(?<=_)\d+(?=/)")  # a.3.b, a/3/b, a_3/b


@dataclass
class ComponentStats:
    name: str
    params: int = 0
    bytes: int = 0
    tensors: int = 0
    layers: int = 0                 # distinct ``layers.N`` among its (HF-named) tensors


@dataclass
class FoldedRow:
    """Tensors that differ only in their layer indices, e.g. ``layers.{0..31}.mlp.up_proj.weight``."""

    pattern: str
    shape: tuple[int, ...]
    dtype: str
    count: int
    component: str
    hf_name: str | None = None      # what a foreign checkpoint's tensor becomes in HF (folded)


@dataclass
class ModelReport:
    path: str
    format: str
    files: list[str]
    model_type: str | None
    architectures: list[str]
    family: str
    family_guessed: bool
    custom_code: bool
    params: int
    bytes: int
    dtypes: dict[str, dict[str, int]]
    components: list[ComponentStats]
    tied: dict[str, str]
    buffers: list[str]
    config: dict[str, Any]
    tokenizer: TokenizerSummary | None
    tensors: list[FoldedRow] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    tree: dict[str, Any] | None = None
    # tensor-name prefixes that vLLM or transformers 4.x/5 refuse -> the prefix all of them load
    # (fixed by `vlmkit convert MODEL --to hf`)
    layout_faults: dict[str, str] = field(default_factory=dict)
    # a compressed-tensors checkpoint's scheme (its packed Linears counted at their logical shapes above)
    quantization: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config(path: Path, checkpoint: Checkpoint) -> dict[str, Any]:
    """config.json beside the weights; GGUF files describe themselves in their metadata."""
    config = read_config_file(path if path.is_dir() else path.parent)
    if config is not None:
        return config
    if checkpoint.format == "gguf":
        # Every GGUF uses llama.cpp's tensor names, whatever the architecture: one family for all.
        arch = checkpoint.metadata.get("general.architecture")
        layers = checkpoint.metadata.get(f"{arch}.block_count")
        return {"model_type": "gguf", "architectures": [arch] if arch else [], "num_hidden_layers": layers}
    return {}


def fold_tensors(infos: dict[str, TensorInfo], family: Family,
                 hf_names: dict[str, tuple[str, ...]] | None = None) -> list[FoldedRow]:
    """Group tensors whose names differ only in numeric path segments (layer indices); ``hf_names``
    (foreign checkpoints) adds the folded HF names each row becomes."""
    groups: dict[tuple[str, tuple[int, ...], str], list[tuple[int, ...]]] = defaultdict(list)
    for name, info in infos.items():
        indices = tuple(int(m.group()) for m in _INDEX.finditer(name))
        template = _INDEX.sub("{}", name)
        groups[(template, info.shape, info.dtype)].append(indices)
    rows = []
    for (template, shape, dtype), index_sets in groups.items():
        pattern = template
        for position in range(template.count("{}")):
            values = sorted({idx[position] for idx in index_sets})
            pattern = pattern.replace("{}", _range_text(values), 1)
        first_name = template.replace("{}", "0")
        component = "buffer" if family.is_buffer(first_name) else family.component_of(first_name)
        hf = None
        if hf_names:
            members = [n for n in infos if _INDEX.sub("{}", n) == template and infos[n].shape == shape]
            hf = ", ".join(fold_names([t for n in members for t in hf_names.get(n, ())])) or "-"
        rows.append(FoldedRow(pattern, shape, dtype, len(index_sets), component, hf))
    return rows


def fold_names(names: list[str]) -> list[str]:
    """``a.layers.0.x``, ``a.layers.1.x`` -> ``a.layers.{0..1}.x`` (first-seen order)."""
    groups: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for name in names:
        groups[_INDEX.sub("{}", name)].append(tuple(int(m.group()) for m in _INDEX.finditer(name)))
    folded = []
    for template, index_sets in groups.items():
        pattern = template
        for position in range(template.count("{}")):
            pattern = pattern.replace("{}", _range_text(sorted({idx[position] for idx in index_sets})), 1)
        folded.append(pattern)
    return folded


def _range_text(values: list[int]) -> str:
    if len(values) == 1:
        return str(values[0])
    if values == list(range(values[0], values[-1] + 1)):
        return f"{{{values[0]}..{values[-1]}}}"
    return "{" + ",".join(map(str, values)) + "}"


def parameter_tensors(
    infos: dict[str, TensorInfo], family: Family, config: dict[str, Any]
) -> tuple[dict[str, TensorInfo], dict[str, str], list[str]]:
    """Split saved tensors into parameters, tied duplicates (name -> twin) and buffers.

    transformers' ``parameters()`` yields a tied weight once; a checkpoint may hold both copies.
    """
    buffers = [name for name in infos if family.is_buffer(name)]
    tied = {}
    if family.ties_active(config):
        tied = {a: b for a, b in family.tied.items() if a in infos and b in infos}
    params = {n: i for n, i in infos.items() if n not in tied and n not in set(buffers)}
    return params, tied, buffers


_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _component_stats(params: dict[str, TensorInfo], family: Family,
                     hf_names: dict[str, tuple[str, ...]] | None = None) -> list[ComponentStats]:
    stats = {name: ComponentStats(name) for name in COMPONENT_ORDER}
    layers: dict[str, set[int]] = defaultdict(set)
    for name, info in params.items():
        component = family.component_of(name)
        entry = stats[component]
        entry.params += info.numel
        entry.bytes += info.nbytes
        entry.tensors += 1
        for hf_name in (hf_names or {}).get(name, (name,)):
            layers[component].update(int(m.group(1)) for m in _LAYER.finditer(hf_name))
    for component, found in layers.items():
        stats[component].layers = len(found)
    return [s for s in stats.values() if s.tensors]


def foreign_hf_names(view: ModelView) -> dict[str, tuple[str, ...]] | None:
    """For a checkpoint in a layout a family maps (big_vision npz), each tensor's HF names."""
    from vlmkit.errors import VlmkitError
    from vlmkit.families.ops import foreign_map, hf_names_for

    wmap = foreign_map(view.family, view.checkpoint.infos)
    if wmap is None:
        return None
    try:
        return hf_names_for(wmap, {n: i.shape for n, i in view.checkpoint.infos.items()})
    except (VlmkitError, KeyError, ValueError):  # a partial checkpoint: no config to infer, show no names
        return None


def _dtype_mix(params: dict[str, TensorInfo]) -> dict[str, dict[str, int]]:
    mix: dict[str, Counter] = defaultdict(Counter)
    for info in params.values():
        mix[info.dtype].update(tensors=1, params=info.numel, bytes=info.nbytes)
    return {dtype: dict(counts) for dtype, counts in sorted(mix.items())}


@dataclass
class ModelView:
    """An opened checkpoint with its config and family: what inspect, tree and memory all start from."""

    path: Path
    checkpoint: Checkpoint
    config: dict[str, Any]
    family: Family
    guessed: bool
    params: dict[str, TensorInfo]   # a compressed-tensors checkpoint's packed Linears at their logical shapes
    tied: dict[str, str]
    buffers: list[str]
    quantization: dict[str, Any] | None = None

    @property
    def folder(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def layer_count(self) -> int:
        return int(self.family.text_cfg(self.config).get("num_hidden_layers") or 0)


@contextmanager
def open_model(model: str | Path, *, download: bool = False) -> Iterator[ModelView]:
    path = resolve_model(model, download=download)
    checkpoint = open_checkpoint(path)
    try:
        config = read_config(path, checkpoint)
        family, guessed = family_for(config, checkpoint.infos)
        params, tied, buffers = parameter_tensors(checkpoint.infos, family, config)
        view = ModelView(path, checkpoint, config, family, guessed, params, tied, buffers)
        view.quantization = quantization_summary([config, *_sub_folder_configs(view.folder, checkpoint.files)])
        view.params = logical_params(params, view.quantization)
        yield view
    finally:
        checkpoint.close()


def inspect_model(
    model: str | Path, *, tree: bool = False, memory: bool = False, download: bool = False
) -> ModelReport:
    """Describe a checkpoint (directory, file, ``demo``, ``zoo:<name>`` or hub id) without reading weights."""
    with open_model(model, download=download) as view:
        report = _report(view)
        if memory:
            report.memory = memory_report(view)
        if tree:
            from vlmkit.tree import model_tree

            root, source = model_tree(view)
            report.tree = {"source": source, "root": root.to_dict()}
        return report


def _report(view: ModelView) -> ModelReport:
    folder, config, family = view.folder, view.config, view.family
    files = view.checkpoint.files
    hf_names = foreign_hf_names(view)
    return ModelReport(
        path=str(view.path),
        format=view.checkpoint.format,
        files=[str(f.relative_to(folder)) if f.is_relative_to(folder) else str(f) for f in files],
        model_type=config.get("model_type"),
        architectures=list(config.get("architectures") or []),
        family=family.name,
        family_guessed=view.guessed,
        custom_code=family.custom_code or "auto_map" in config,
        params=sum(i.numel for i in view.params.values()),
        bytes=sum(i.nbytes for i in view.params.values()),
        dtypes=_dtype_mix(view.params),
        components=_component_stats(view.params, family, hf_names),
        tied=view.tied,
        buffers=view.buffers,
        config={k: v for k in family.config_fields if (v := config_value(config, k)) is not None},
        tokenizer=summarize_tokenizer(_tokenizer_folder(folder),
                                      view.checkpoint.metadata if view.checkpoint.format == "gguf" else None),
        tensors=fold_tensors(view.checkpoint.infos, family, hf_names),
        layout_faults=_layout_faults(view),
        quantization=view.quantization,
    )


def _sub_folder_configs(folder: Path, files: list[Path]) -> list[dict[str, Any]]:
    """config.json files beside weight files below the model's folder (a custom-code checkpoint's ``llm/``)."""
    out = []
    for sub in sorted({f.parent for f in files if f.parent != folder and f.parent.is_relative_to(folder)}):
        config = read_config_file(sub)
        if config:
            out.append(config)
    return out


def _tokenizer_folder(folder: Path) -> Path:
    """Where the tokenizer files are: the folder, or ``llm/`` for VILA's layout (what convert uses)."""
    from vlmkit.gguf.tokenizer import tokenizer_dir

    try:
        return tokenizer_dir(folder)
    except VlmkitError:
        return folder


def _layout_faults(view: ModelView) -> dict[str, str]:
    from vlmkit.export.hf import fold_renames, layout_faults

    if view.checkpoint.format not in ("safetensors", "torch") or not view.config:
        return {}
    return fold_renames(layout_faults(view.checkpoint, view.config))


def memory_report(view: ModelView) -> dict[str, Any]:
    rows = estimate_memory(view.params.values(), view.layer_count)
    return {
        "inference": [asdict(row) for row in rows],
        "run": [asdict(row) for row in _run_rows(view)],
        "training": training_bytes(sum(i.numel for i in view.params.values())),
    }


def _run_rows(view: ModelView) -> list:
    """``vlmkit run`` on llama.cpp (one image for a VLM); none when the config lacks the LM's sizes."""
    text = view.family.text_cfg(view.config) if view.family.text_config else view.config
    if any(not text.get(key) for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")):
        return []
    vision_parts = (VISION_TOWER, PROJECTOR)
    lm = [i for n, i in view.params.items() if view.family.component_of(n) not in vision_parts]
    vision = [i for n, i in view.params.items() if view.family.component_of(n) in vision_parts]
    vis = view.config.get(view.family.vision_config or "", {}) if vision else {}
    size, patch = vis.get("image_size"), vis.get("patch_size")
    image_tokens = (int(size) // int(patch)) ** 2 if isinstance(size, int) and isinstance(patch, int) else 0
    return estimate_run(lm, vision, text, image_tokens)
