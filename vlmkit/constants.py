"""Names with one spelling each: tensor dtypes, convert's output types, and their byte sizes.

* Tensor dtypes are the safetensors spellings (``F32``, ``BF16``, ``I64`` ...), for every reader; GGUF
  tensors keep their GGML type name (``Q8_0``, ``Q4_K``).
* convert's output types are llama.cpp's ``--outtype`` / ``llama-quantize`` names in lower case
  (``f16``, ``q4_k_m``); ``output_type()`` accepts the aliases people type (``fp16``, ``float16``,
  ``F16``, ``Q4_K_M``) and returns the one spelling.
* Byte sizes of GGML types come from gguf-py's ``GGML_QUANT_SIZES`` (llama.cpp's own table), not
  from numbers copied here. GGML types are named here by gguf-py's enum member names (``Q4_K``) and
  resolved on use, so importing this module does not import gguf-py.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from vlmkit.errors import UnsupportedError

if TYPE_CHECKING:   # gguf-py is imported on use: readers (inspect) stay light
    import gguf

# --- tensor dtypes ----------------------------------------------------------------------------------

# Bits per element of every dtype safetensors knows (safetensors/src/tensor.rs, ``Dtype``).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

# dtype -> numpy dtype name, for the dtypes numpy (with ml_dtypes for BF16) can hold
NUMPY_DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}

# What people type for a float dtype -> the one spelling (``--dtype`` of run, memory rows).
_FLOAT_ALIASES = {
    "F32": ("f32", "fp32", "float32", "float"), "F16": ("f16", "fp16", "float16", "half"),
    "BF16": ("bf16", "bfloat16"),
}


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for a tensor dtype name (``BF16`` through ml_dtypes)."""
    if dtype == "BF16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if dtype not in NUMPY_DTYPES:
        raise UnsupportedError(None, f"tensor dtype {dtype} has no numpy equivalent")
    return np.dtype(NUMPY_DTYPES[dtype])


def float_dtype(text: str) -> str:
    """``fp16`` / ``float16`` / ``F16`` -> ``F16``; an unknown name is a one-line error."""
    for canonical, aliases in _FLOAT_ALIASES.items():
        if text.lower() in aliases or text == canonical:
            return canonical
    raise UnsupportedError(None, f"unknown dtype {text!r} (use f32, bf16 or f16)")


# --- convert's output types -------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputType:
    """One ``convert --dtype`` choice."""

    name: str           # the one spelling: f16, q4_k_m ...
    file_type: str      # gguf.LlamaFileType member written as general.file_type (MOSTLY_Q4_K_M)
    tensor_type: str    # GGML type of a large matrix (Q4_K_M: Q4_K, with some Q6_K)

    @property
    def is_float(self) -> bool:
        return self.name in FLOAT_TYPES

    @property
    def ggml_type(self) -> gguf.GGMLQuantizationType:
        import gguf

        return gguf.GGMLQuantizationType[self.tensor_type]

    @property
    def llama_file_type(self) -> gguf.LlamaFileType:
        import gguf

        return gguf.LlamaFileType[self.file_type]

    @property
    def llama_ftype(self) -> str:
        """The ``llama_ftype`` constant of llama.cpp's quantizer (``LLAMA_FTYPE_MOSTLY_Q4_K_M``)."""
        return f"LLAMA_FTYPE_{self.file_type}"


OUTPUT_TYPES: dict[str, OutputType] = {t.name: t for t in (
    OutputType("f32", "ALL_F32", "F32"),
    OutputType("f16", "MOSTLY_F16", "F16"),
    OutputType("bf16", "MOSTLY_BF16", "BF16"),
    OutputType("q8_0", "MOSTLY_Q8_0", "Q8_0"),
    OutputType("q4_0", "MOSTLY_Q4_0", "Q4_0"),
    OutputType("q4_k_m", "MOSTLY_Q4_K_M", "Q4_K"),
    OutputType("q5_k_m", "MOSTLY_Q5_K_M", "Q5_K"),
    OutputType("q6_k", "MOSTLY_Q6_K", "Q6_K"),
)}
FLOAT_TYPES = ("f32", "f16", "bf16")     # written by vlmkit itself; the others by llama.cpp's quantizer
_OUTPUT_ALIASES = {"fp32": "f32", "float32": "f32", "fp16": "f16", "float16": "f16", "half": "f16",
                   "bfloat16": "bf16"}


def output_type(text: str) -> OutputType:
    """``F16`` / ``fp16`` / ``Q4_K_M`` -> the OutputType; an unknown name is a one-line error."""
    key = text.lower()
    key = _OUTPUT_ALIASES.get(key, key)
    if key not in OUTPUT_TYPES:
        raise UnsupportedError(None, f"--dtype {text}: choose one of {', '.join(OUTPUT_TYPES)}")
    return OUTPUT_TYPES[key]


def ggml_nbytes(gtype: object, numel: int) -> int:
    """Bytes of ``numel`` values of a GGML type (enum or name), from gguf-py's block table (whole blocks)."""
    block, block_bytes = _quant_size(gtype)
    return -(-numel // block) * block_bytes


def ggml_block(gtype: object) -> int:
    """Values per block of a GGML type (1 for float types)."""
    return _quant_size(gtype)[0]


def _quant_size(gtype: object) -> tuple[int, int]:
    import gguf

    key = gguf.GGMLQuantizationType[gtype] if isinstance(gtype, str) else gtype
    return gguf.GGML_QUANT_SIZES[key]
