"""The two sides of ``vlmkit diff``: any checkpoint seen as HF-named tensors, one tensor at a time.

A side maps its own names to the on-disk HF names of its family (``Family.disk_name``), so checkpoints
in different formats meet on common ground: an HF folder as is, a big_vision ``.npz`` through the
family's reversible weight map, a GGUF through the HF -> GGUF plan that ``vlmkit convert`` itself uses
(with llama.cpp's Q/K permutation undone; quantized tensors dequantized by gguf-py), a PEFT LoRA
adapter as its base model plus B·A·scale on the modules it targets (never merged into a copy).
Each side keeps at most one source tensor cached (a scanned npz array holds every layer).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.families import Family, family_for
from vlmkit.families.ops import Step, WeightMap, foreign_map, forward_shapes, run_forward
from vlmkit.readers import open_checkpoint
from vlmkit.readers.base import Checkpoint

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Side:
    """HF-named tensors of one checkpoint: shapes up front, arrays on demand."""

    label: str
    kind: str                                         # hf | big_vision | gguf | lora
    family: Family
    shapes: dict[str, tuple[int, ...]]
    loader: Callable[[str], np.ndarray]
    checkpoint: Checkpoint
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    skipped: dict[str, str] = field(default_factory=dict)   # HF name -> why this side cannot show it
    notes: list[str] = field(default_factory=list)
    _cache: tuple[str, np.ndarray] | None = None

    def load(self, name: str) -> np.ndarray:
        if self._cache is None or self._cache[0] != name:
            self._cache = (name, self.loader(name))
        return self._cache[1]

    def close(self) -> None:
        self._cache = None
        self.checkpoint.close()


def open_side(model: str | Path, other: Side | None = None, download: bool = False) -> Side:
    """Open MODEL as a side; a GGUF or a LoRA adapter is read against ``other`` (its HF source / base)."""
    from vlmkit.hub import resolve_model
    from vlmkit.inspect import read_config

    path = resolve_model(model, download=download)
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
        if other is None or other.kind != "hf":
            raise UnsupportedError(path, "a LoRA adapter is compared with its base model: pass the base (HF) first")
        return lora_side(path, other)
    checkpoint = open_checkpoint(path)
    config = read_config(path, checkpoint)
    if checkpoint.format == "gguf":
        if other is None or other.kind != "hf":
            raise UnsupportedError(path, "a GGUF is compared with its HF source: pass the HF model first")
        return gguf_side(path, checkpoint, other)
    family, _ = family_for(config, checkpoint.infos)
    wmap = foreign_map(family, checkpoint.infos)
    if wmap is not None:
        return foreign_side(path, checkpoint, family, wmap, other)
    return hf_side(path, checkpoint, family, config)


def hf_side(path: Path, checkpoint: Checkpoint, family: Family, config: dict[str, Any]) -> Side:
    stored = {family.disk_name(n): n for n in checkpoint.infos if not family.is_buffer(n)}
    shapes = {name: tuple(checkpoint.infos[s].shape) for name, s in stored.items()}
    read = checkpoint.read   # plain reads: a memory map would keep the whole model resident
    return Side(str(path), "hf", family, shapes, lambda n: read(stored[n]), checkpoint, config, path)


def foreign_side(path: Path, checkpoint: Checkpoint, family: Family, wmap: WeightMap, other: Side | None) -> Side:
    """A checkpoint in a layout the family maps (big_vision): its tensors as the HF tensors they become."""
    shapes_in = {n: tuple(i.shape) for n, i in checkpoint.infos.items()}
    if wmap.config_from_shapes is not None:      # its own shapes, whatever the other side is
        try:
            config = wmap.config_from_shapes(*wmap.folded_shapes(shapes_in))
        except VlmkitError as error:
            raise type(error)(error.path or path, error.reason) from None
    elif other is not None and other.family is family and other.config:
        config = other.config
    else:
        raise UnsupportedError(path, f"no config for this {wmap.format} checkpoint: compare it with its HF model")
    dims = wmap.dims(config)
    steps, unknown = wmap.plan_forward(shapes_in, dims)
    where: dict[str, tuple[Step, int]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for step in steps:
        for position, (name, shape) in enumerate(forward_shapes(step, shapes_in[step.source], dims)):
            where[name] = (step, position)
            shapes[name] = shape
    cached: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> np.ndarray:
        step, _ = where[name]
        if step.source not in cached:   # one source array (all its layers) at a time
            cached.clear()
            cached[step.source] = {}
            cached[step.source].update(run_forward(step, checkpoint.read(step.source), dims))
        return cached[step.source][name]

    side = Side(str(path), wmap.format, family, shapes, load, checkpoint, config, path)
    side.notes.extend(f"{n}: no HF mapping, not compared" for n in unknown)
    return side


def gguf_side(path: Path, checkpoint: Checkpoint, source: Side) -> Side:
    """A GGUF named back to its HF source's tensors through the plan ``vlmkit convert`` writes by."""
    import gguf

    from vlmkit.gguf.lm import plan_lm, source_transform
    from vlmkit.gguf.transforms import INVERSE_TRANSFORMS
    from vlmkit.readers import open_checkpoint

    if source.path is None or not (source.path / "config.json").is_file():
        raise UnsupportedError(path, "comparing a GGUF needs its HF source folder (with config.json) first")
    with open_checkpoint(source.path) as hf_checkpoint:
        plan = plan_lm(source.path, source.config, hf_checkpoint, gguf.GGMLQuantizationType.F32)
    by_gguf = {t.name: t.source for t in plan.tensors if t.source}
    missing = [name for name in by_gguf if name not in checkpoint.infos]
    if len(missing) == len(by_gguf):
        raise UnsupportedError(path, f"none of its tensors match what {source.label} converts to")
    names = {source.family.disk_name(hf): g for g, hf in by_gguf.items() if g in checkpoint.infos}
    transforms = {name: source_transform(plan, hf) for g, hf in by_gguf.items()
                  for name in [source.family.disk_name(hf)]}

    def load(name: str) -> np.ndarray:
        array = checkpoint.read(names[name])
        undo = transforms.get(name)
        return INVERSE_TRANSFORMS[undo](array, plan.hp) if undo else array

    shapes = {name: tuple(checkpoint.infos[g].shape) for name, g in names.items()}
    side = Side(str(path), "gguf", source.family, shapes, load, checkpoint, source.config, path)
    side.skipped = {source.family.disk_name(n): why for n, why in plan.dropped.items()}
    extra = sorted(set(checkpoint.infos) - set(names.values()))
    side.notes.extend(f"{n}: GGUF-only tensor, not compared" for n in extra)
    return side


def lora_side(path: Path, base: Side) -> Side:
    """The base model with each LoRA target's B·A·scale added, computed per tensor on demand."""
    try:
        adapter = json.loads((path / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as error:
        raise VlmkitError(path / ADAPTER_CONFIG, f"invalid JSON ({error.msg} at line {error.lineno})") from None
    checkpoint = open_checkpoint(path)
    pairs = _lora_pairs(path, checkpoint, base)
    alpha, patterns = float(adapter.get("lora_alpha", 8)), adapter.get("alpha_pattern") or {}
    rslora = bool(adapter.get("use_rslora"))

    def delta(name: str) -> np.ndarray:
        a_name, b_name, module = pairs[name]
        lora_a = checkpoint.read(a_name).astype(np.float32)
        lora_b = checkpoint.read(b_name).astype(np.float32)
        rank = lora_a.shape[0]
        module_alpha = next((float(v) for k, v in patterns.items() if re.search(rf"(^|\.){k}$", module)), alpha)
        scale = module_alpha / (rank ** 0.5 if rslora else rank)
        product = lora_b @ lora_a
        if adapter.get("fan_in_fan_out"):
            product = product.T
        return product * scale

    def load(name: str) -> np.ndarray:
        base_array = base.load(name)
        if name not in pairs:
            return base_array
        return (base_array.astype(np.float32) + delta(name)).astype(base_array.dtype)

    side = Side(str(path), "lora", base.family, dict(base.shapes), load, checkpoint, base.config, path)
    side.notes.append(f"LoRA r={adapter.get('r')} alpha={alpha}{' rslora' if rslora else ''} on "
                      f"{len(pairs)} module(s); B·A·scale added per tensor, never merged into a copy")
    return side


def _lora_pairs(path: Path, checkpoint: Checkpoint, base: Side) -> dict[str, tuple[str, str, str]]:
    """HF weight name -> (lora_A tensor, lora_B tensor, module name) for every adapted module."""
    pairs = {}
    unsupported = []
    for name in checkpoint.infos:
        if not name.endswith(".lora_A.weight"):
            if not name.endswith(".lora_B.weight"):
                unsupported.append(name)
            continue
        module = re.sub(r"^base_model\.model\.", "", name[: -len(".lora_A.weight")])
        b_name = name.replace(".lora_A.weight", ".lora_B.weight")
        weight = base.family.disk_name(module + ".weight")
        if b_name not in checkpoint.infos or weight not in base.shapes:
            raise UnsupportedError(path, f"adapter tensor '{name}' has no lora_B partner or base weight '{weight}'")
        pairs[weight] = (name, b_name, module)
    if unsupported:
        raise UnsupportedError(path, f"{len(unsupported)} adapter tensor(s) are not LoRA A/B weights "
                                     f"(modules_to_save, DoRA, embedding LoRA ...): {', '.join(unsupported[:4])}")
    return pairs
