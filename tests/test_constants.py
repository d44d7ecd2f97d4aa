"""One spelling per dtype and output type, aliases accepted where people type them, sizes from gguf-py."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from vlmkit.constants import DTYPE_BITS, OUTPUT_TYPES, float_dtype, ggml_nbytes, numpy_dtype, output_type
from vlmkit.errors import UnsupportedError


@pytest.mark.parametrize("typed, name", [("f16", "f16"), ("F16", "f16"), ("fp16", "f16"), ("float16", "f16"),
                                         ("Q4_K_M", "q4_k_m"), ("bfloat16", "bf16"), ("fp32", "f32")])
def test_output_type_aliases(typed: str, name: str) -> None:
    assert output_type(typed).name == name


def test_unknown_output_type_is_one_line() -> None:
    with pytest.raises(UnsupportedError, match="--dtype q3_k: choose one of f32, f16, bf16, q8_0"):
        output_type("q3_k")


def test_output_types_name_real_llama_cpp_file_types() -> None:
    for kind in OUTPUT_TYPES.values():
        assert kind.llama_file_type.name == kind.file_type
        assert kind.ggml_type in gguf.GGML_QUANT_SIZES


@pytest.mark.parametrize("gtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K"])
def test_sizes_come_from_gguf_py(gtype: str) -> None:
    block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[gtype]]
    assert ggml_nbytes(gtype, 4 * 256) == 4 * 256 // block * block_bytes
    packed = gguf.quants.quantize(np.zeros((1, 256), np.float32), gguf.GGMLQuantizationType[gtype]) \
        if gtype in ("Q8_0", "Q4_0", "F16", "BF16", "F32") else None
    if packed is not None:
        assert packed.nbytes == ggml_nbytes(gtype, 256)


def test_float_dtype_aliases_and_numpy_sizes() -> None:
    assert {float_dtype(t) for t in ("fp32", "float32", "F32", "f32")} == {"F32"}
    assert float_dtype("half") == "F16" and float_dtype("bfloat16") == "BF16"
    with pytest.raises(UnsupportedError):
        float_dtype("int3")
    for name in ("F32", "F16", "BF16", "I64", "U8", "BOOL"):
        assert numpy_dtype(name).itemsize * 8 == DTYPE_BITS[name]
