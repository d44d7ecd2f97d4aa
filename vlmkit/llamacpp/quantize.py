"""Quantized GGUF types through llama.cpp's own quantizer (``llama_model_quantize``), not a re-implementation:
the float GGUF is written first, then llama.cpp picks per-tensor types exactly as ``llama-quantize`` does
(e.g. Q4_K_M keeps some attention-V / FFN-down tensors at Q6_K).

An importance matrix goes in as ``llama-quantize --imatrix`` hands it over: a C array of
``llama_model_imatrix_data`` (GGUF tensor name, per-column values, length) ended by a null entry, plus the
``quantize.imatrix.*`` metadata keys it records in the output as key/value overrides.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vlmkit.constants import output_type
from vlmkit.errors import VlmkitError
from vlmkit.llamacpp.loading import llama_cpp_quiet, quiet_fds


def quantize(src: Path, dst: Path, dtype: str, threads: int | None = None, verbose: bool = False,
             imatrix: Mapping[str, np.ndarray] | None = None,
             metadata: Mapping[str, str | int] | None = None) -> None:
    """``src`` (float GGUF) -> ``dst`` at ``dtype``; ``imatrix``: GGUF tensor name -> per-column importance."""
    llama_cpp = llama_cpp_quiet(verbose)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, output_type(dtype).llama_ftype)
    params.nthread = threads or os.cpu_count() or 1
    keep_alive = []  # the C structs point into these until llama_model_quantize returns
    if imatrix:
        entries, keep_alive = _imatrix_array(llama_cpp, imatrix)
        params.imatrix = entries
    if metadata:
        overrides = _kv_overrides(llama_cpp, metadata)
        keep_alive.append(overrides)
        params.kv_overrides = overrides
    with quiet_fds(verbose):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    del keep_alive
    if rc != 0:
        raise VlmkitError(src, f"llama.cpp failed to quantize to {dtype} (return code {rc}"
                               + (", e.g. an importance-matrix entry whose width is not its tensor's)" if imatrix
                                  else ")"))


def _imatrix_array(llama_cpp, imatrix: Mapping[str, np.ndarray]):
    arrays = [(name.encode(), np.ascontiguousarray(values, dtype=np.float32)) for name, values in imatrix.items()]
    entries = (llama_cpp.llama_model_imatrix_data * (len(arrays) + 1))()
    for entry, (name, values) in zip(entries, arrays):
        entry.name = name
        entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = values.size
    entries[len(arrays)].name = None  # terminator: {nullptr, nullptr, 0}
    return entries, [entries, arrays]


def _kv_overrides(llama_cpp, metadata: Mapping[str, str | int]):
    overrides = (llama_cpp.llama_model_kv_override * (len(metadata) + 1))()
    for override, (key, value) in zip(overrides, metadata.items()):
        override.key = key.encode()[:127]
        if isinstance(value, int):
            override.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            override.value.val_i64 = value
        else:
            override.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            override.value.val_str = str(value).encode()[:127]
    overrides[len(metadata)].key = b""  # terminator: an empty key
    return overrides
