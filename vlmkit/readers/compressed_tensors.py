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
    for name, group in sorted((quant.get("config_groups") or {}).items()):
        weights = (group or {}).get("weights") or {}
        schemes.append({"group": name, "targets": list(group.get("targets") or []),
                        "num_bits": weights.get("num_bits"), "type": weights.get("type"),
                        "strategy": weights.get("strategy"), "group_size": weights.get("group_size"),
                        "symmetric": weights.get("symmetric"),
                        "activations": bool(group.get("input_activations"))})
    return {"quant_method": "compressed-tensors", "format": quant.get("format"), "schemes": schemes,
            "ignore": len(quant.get("ignore") or []), "packed_linears": 0}


def logical_params(params: dict[str, TensorInfo], summary: dict[str, Any] | None) -> dict[str, TensorInfo]:
    """``params`` with every packed Linear as one ``weight`` of its logical shape (dtype ``I<bits>``) holding the
    bytes of its packed integers, scales and zero points; ``summary["packed_linears"]`` counts them. Without one
    bit width for every scheme the entries stay as stored."""
    bits = {s["num_bits"] for s in (summary or {}).get("schemes", [])}
    if summary is None or summary.get("format") != "pack-quantized" or len(bits) != 1 or None in bits:
        return params
    (width,) = bits
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
