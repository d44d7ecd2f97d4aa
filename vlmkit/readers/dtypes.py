"""Library dtypes (torch, numpy) -> the one spelling of ``vlmkit.constants`` (F32, BF16, I64 ...).

GGUF tensors use the GGML type name instead (Q8_0, Q4_K ...), see ``gguf_reader``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TORCH_NAMES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
    "complex64": "C64",
}

_NUMPY_KINDS = {"f": "F", "i": "I", "u": "U"}


def torch_dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"BF16"``; unknown dtypes keep torch's own spelling, upper-cased."""
    short = str(dtype).removeprefix("torch.")
    return _TORCH_NAMES.get(short, short.upper())


def numpy_dtype_name(dtype: np.dtype) -> str | None:
    """``float32`` -> ``"F32"``, ``|V2`` (big_vision's bf16) -> ``"BF16"``; None when not a tensor dtype."""
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.fields is None:
        return "BF16"
    if dtype.kind == "b":
        return "BOOL"
    if dtype.kind in _NUMPY_KINDS and dtype.fields is None:
        return f"{_NUMPY_KINDS[dtype.kind]}{dtype.itemsize * 8}"
    return None
