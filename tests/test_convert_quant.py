"""Every --dtype converts through llama.cpp's quantizer, loads in llama.cpp and reports parity numbers."""

from __future__ import annotations

import gguf
import pytest

import llama_cpp  # noqa: E402,F401  (a test dependency: missing fails the run, never skips it)

from vlmkit.convert import convert  # noqa: E402

# --dtype -> the GGUF type of a large matrix (the tiny replicas' 256-wide rows allow K-quants)
EXPECTED = {"bf16": "BF16", "q4_0": "Q4_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}


@pytest.mark.parametrize("dtype", list(EXPECTED))
def test_dtype_converts_runs_and_reports(zoo, tmp_path, dtype):
    result = convert(zoo("llava-calm2-siglip"), tmp_path / dtype, dtype=dtype, verify=True, mmproj=False, threads=2)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(result.model_path).tensors}
    assert types["blk.0.attn_q.weight"] == EXPECTED[dtype]
    report = result.verify
    assert report.tokenizer.agreement == 1.0
    assert report.teacher.mean_kld < 0.5 and report.teacher.same_top1 >= 0.5
    if dtype == "bf16":
        assert report.teacher.same_top1 == 1.0
