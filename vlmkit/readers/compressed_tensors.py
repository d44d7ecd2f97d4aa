"""A compressed-tensors checkpoint (``quant_method: compressed-tensors``, what ``vlmkit quantize``, llm-compressor
and the Hub's ``*-quantized.w4a16`` models write) seen as the model it stands for, from headers alone.

A packed Linear is stored as ``weight_packed`` (int32, ``32 / bits`` values per word along the input dimension),
``weight_scale``, ``weight_shape`` and, when asymmetric, ``weight_zero_point`` (packed along the output
dimension). Counting those as parameters (as a plain header walk does) reports an 8th of a W4 model's weights.
:func:`logical_params` folds each such set into one ``weight`` entry of its logical shape and its stored bytes,
so the parameter count is the model's and the size is the files'. Written here because compressed-tensors
itself only decompresses loaded tensors; it has no header-only view.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vlmkit.readers.base import TensorInfo

PACKED = ".weight_packed"
COMPANIONS = (".weight_scale", ".weight_zero_point", ".weight_shape", ".weight_g_idx")


def quantization_summary(configs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The compressed-tensors ``quantization_config`` found in ``configs`` (the model's config.json, then those
    beside its weight files in sub-folders: a VILA checkpoint's ``llm/``) in a few fields, or None."""
    found = [c.get("quantization_config") or (c.get("text_config") or {}).get("quantization_config")
             for c in configs]
    quant = next((q for q in found if isinstance(q, dict) and q.get("quant_method") == "compressed-tensors"), None)
    if quant is None:
        return None
    schemes = []
    groups = quant.get("config_groups")
    for name, group in sorted(groups.items() if isinstance(groups, dict) else []):
        group = group if isinstance(group, dict) else {}  # a malformed entry shows as an unknown scheme
        weights = group.get("weights") if isinstance(group.get("weights"), dict) else {}
        targets = group.get("targets")
        schemes.append({"group": name, "targets": list(targets) if isinstance(targets, list) else [],
                        "num_bits": weights.get("num_bits"), "type": weights.get("type"),
                        "strategy": weights.get("strategy"), "group_size": weights.get("group_size"),
                        "symmetric": weights.get("symmetric"),
                        "activations": bool(group.get("input_activations"))})
    ignore = quant.get("ignore")
    return {"quant_method": "compressed-tensors", "format": quant.get("format"), "schemes": schemes,
            "ignore": len(ignore) if isinstance(ignore, list) else 0, "packed_linears": 0, "packed_as_stored": 0}


def logical_params(params: dict[str, TensorInfo], summary: dict[str, Any] | None) -> dict[str, TensorInfo]:
    """``params`` with every packed Linear as one ``weight`` of its logical shape (dtype ``I<bits>``) holding the
    bytes of its packed integers, scales and zero points; ``summary["packed_linears"]`` counts them. Without one
    readable bit width for every scheme the entries stay as stored, counted in ``summary["packed_as_stored"]``.
    The logical width is ``words · 32 / bits``: exact whenever ``bits · width`` is a multiple of 32 (every 4- and
    8-bit Linear of a width divisible by 8), else an upper bound within ``32 / bits``."""
    if summary is None:
        return params
    bits = {s["num_bits"] for s in summary["schemes"]}
    width = next(iter(bits)) if len(bits) == 1 else None
    if summary["format"] != "pack-quantized" or not isinstance(width, int) or isinstance(width, bool) \
            or not 1 <= width <= 8:
        summary["packed_as_stored"] = sum(name.endswith(PACKED) for name in params)
        return params
    out = dict(params)
    for name, info in params.items():
        if not name.endswith(PACKED) or len(info.shape) != 2:
            continue
        base = name.removesuffix(PACKED)
        companions = [out.pop(base + suffix) for suffix in COMPANIONS if base + suffix in out]
        del out[name]
        rows, words = info.shape
        out[base + ".weight"] = replace(info, name=base + ".weight", shape=(rows, words * 32 // width),
                                        dtype=f"I{width}", nbytes=info.nbytes + sum(c.nbytes for c in companions),
                                        offset=None)
        summary["packed_linears"] += 1
    return out
