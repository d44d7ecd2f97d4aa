"""Plan the language model's GGUF: which source tensor becomes which GGUF tensor, how, and why the
others are left out. The mapping is data: the family's ``lm_prefixes`` / ``gguf_transforms`` /
``gguf_drop`` plus gguf-py's own ``TensorNameMap`` (the table llama.cpp's converter uses)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from vlmkit.constants import ggml_nbytes
from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.families import family_for, family_hook
from vlmkit.families.base import PROJECTOR, VISION_TOWER, Family
from vlmkit.gguf.hparams import base_hparams, text_config
from vlmkit.gguf.transforms import TRANSFORMS
from vlmkit.gguf.writer import LazyTensor
from vlmkit.readers import Checkpoint
from vlmkit.readers.stream import ROW_BLOCK_BYTES

GT = gguf.GGMLQuantizationType
MMPROJ_REASON = "vision tower / projector: written to mmproj.gguf"
BUFFER_REASON = "saved buffer, not a parameter (llama.cpp recomputes it)"


@dataclass
class LmPlan:
    arch: str                                    # gguf-py MODEL_ARCH name
    family: Family                               # the checkpoint's family (llava, llama ...)
    text_family: Family                          # the language model's family (llama, gpt_neox)
    config: dict[str, Any]                       # the text config
    hp: dict[str, Any]                           # n_head, n_head_kv ... for transforms
    tensors: list[LazyTensor] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)   # source tensor -> reason


def resolve_families(model_dir: Path, config: dict[str, Any], names: list[str]) -> tuple[Family, Family, dict]:
    family, _ = family_for(config, names)
    if family.gguf_arch:
        return family, family, config
    text_cfg = text_config(model_dir, family, config)
    text_family, guessed = family_for(text_cfg, ())
    if guessed or not text_family.gguf_arch:
        kind = text_cfg.get("model_type") or family.name
        raise UnsupportedError(model_dir, f"no GGUF export for language model type '{kind}' "
                                          "(supported: llama, gpt_neox and LLaVA-style VLMs built on them)")
    return family, text_family, text_cfg


def plan_lm(model_dir: Path, config: dict[str, Any], source: Checkpoint, dtype: GT) -> LmPlan:
    family, text_family, text_cfg = resolve_families(model_dir, config, source.names())
    arch = text_family.gguf_arch
    hp = base_hparams(text_cfg)
    plan = LmPlan(arch, family, text_family, text_cfg, hp)
    name_map = gguf.get_tensor_name_map(_model_arch(arch), hp["n_layer"])
    unmapped = []
    for name in source.names():
        reason = _drop_reason(family, text_family, name)
        if reason:
            plan.dropped[name] = reason
            continue
        canonical = _canonical(family, name)
        gguf_name = name_map.get_name(canonical, try_suffixes=(".weight", ".bias")) if canonical else None
        if gguf_name is None:
            unmapped.append(name)
            continue
        plan.tensors.append(_lazy(source, name, gguf_name, _transform(text_family, canonical), hp, dtype))
    if unmapped:
        shown = ", ".join(unmapped[:8]) + (f" ... (+{len(unmapped) - 8})" if len(unmapped) > 8 else "")
        raise VlmkitError(model_dir, f"{len(unmapped)} tensor(s) have no GGUF mapping for {family.name}: {shown}")
    fix_tensors = family_hook(text_family, "gguf_fix_tensors")
    if fix_tensors is not None:
        fix_tensors(plan)
    return plan


def _model_arch(arch: str) -> gguf.MODEL_ARCH:
    return {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]


def _drop_reason(family: Family, text_family: Family, name: str) -> str | None:
    if family.component_of(name) in (VISION_TOWER, PROJECTOR) and family is not text_family:
        return MMPROJ_REASON
    if family.is_buffer(name):
        return BUFFER_REASON
    for fam in (family, text_family):
        for pattern, reason in fam.gguf_drop.items():
            if re.search(pattern, name):
                return reason
    return None


def _canonical(family: Family, name: str) -> str | None:
    """The text family's own tensor name: strip the VLM wrapper's prefix (longest match wins)."""
    if not family.lm_prefixes:
        return name
    prefix = max((p for p in family.lm_prefixes if name.startswith(p)), key=len, default=None)
    return None if prefix is None else family.lm_prefixes[prefix] + name[len(prefix):]


def _transform(text_family: Family, canonical: str) -> str | None:
    return next((t for pattern, t in text_family.gguf_transforms.items() if re.search(pattern, canonical)), None)


def out_type(gguf_name: str, ndim: int, want: GT) -> GT:
    """llama.cpp keeps 1-D tensors and norms in f32 (as its converter does)."""
    return GT.F32 if ndim <= 1 or gguf_name.endswith("_norm.weight") else want


def _lazy(source: Checkpoint, name: str, gguf_name: str, transform: str | None,
          hp: dict[str, Any], want: GT) -> LazyTensor:
    src = source.infos[name]
    gtype = out_type(gguf_name, len(src.shape), want)
    nbytes = ggml_nbytes(gtype, src.numel)
    if transform is None and gtype.name == src.dtype:
        def write(f):
            source.copy_into(name, f)
    elif transform is None:
        def write(f):
            for block in source.iter_rows(name):
                cast(block, gtype).tofile(f)
    else:
        def write(f):
            write_cast(TRANSFORMS[transform](source.read(name), hp), gtype, f)
    return LazyTensor(gguf_name, src.shape, gtype, nbytes, write, source=name)


def write_cast(array: np.ndarray, gtype: GT, fout, max_bytes: int = ROW_BLOCK_BYTES) -> None:
    """``cast(array, gtype).tofile(fout)`` a block of rows at a time: a 4096 x 4096 bf16 projection would
    otherwise pass through a 64 MB float32 and a 32 MB output copy at once (the f16 conversion's peak RSS)."""
    rows = array.shape[0] if array.ndim > 1 else 1
    step = max(1, max_bytes // max(1, array.nbytes // rows))
    for start in range(0, rows, step) if array.ndim > 1 else (None,):
        cast(array if start is None else array[start:start + step], gtype).tofile(fout)


def cast(array: np.ndarray, gtype: GT) -> np.ndarray:
    """To the output type, through float32 for a bf16 / f16 source (as llama.cpp's converter does); a
    quantized type (Q8_0 ...) through gguf-py's ``quants.quantize``, the converter's own quantizer."""
    if gtype == GT.BF16:
        import ml_dtypes

        return np.ascontiguousarray(array.astype(ml_dtypes.bfloat16))
    wide = array if array.dtype == np.float32 else array.astype(np.float32)
    if gtype not in (GT.F16, GT.F32):
        return gguf.quants.quantize(wide, gtype)
    return np.ascontiguousarray(wide.astype(np.float16 if gtype == GT.F16 else np.float32, copy=False))


def source_transform(plan: LmPlan, source_name: str) -> str | None:
    """The transform (a ``TRANSFORMS`` key) the plan applies to ``source_name``; None: written as is."""
    canonical = _canonical(plan.family, source_name)
    return _transform(plan.text_family, canonical) if canonical else None
