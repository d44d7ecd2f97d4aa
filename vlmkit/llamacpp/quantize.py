"""Quantized GGUF types through llama.cpp's own quantizer (``llama_model_quantize``), not a re-implementation:
the float GGUF is written first, then llama.cpp picks per-tensor types exactly as ``llama-quantize`` does
(e.g. Q4_K_M keeps some attention-V / FFN-down tensors at Q6_K)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from vlmkit.constants import output_type
from vlmkit.errors import VlmkitError
from vlmkit.llamacpp.loading import llama_cpp_quiet, quiet_fds

def quantize(src: Path, dst: Path, dtype: str, threads: int | None = None, verbose: bool = False) -> None:
    llama_cpp = llama_cpp_quiet(verbose)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, output_type(dtype).llama_ftype)
    params.nthread = threads or os.cpu_count() or 1
    with quiet_fds(verbose):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise VlmkitError(src, f"llama.cpp failed to quantize to {dtype} (return code {rc})")
