"""The dtype vlmkit hands vLLM (no vLLM needed: the main environment checks the choice; tests/vllm_suite runs it).
`auto` must mean the checkpoint's own type, as on the transformers backend: vLLM's own `auto` would run a float32
checkpoint at bfloat16 and answer differently from transformers with the same flags."""

from __future__ import annotations

import pytest

from vlmkit.errors import UnsupportedError
from vlmkit.runtime.vllm_backend import vllm_dtype


@pytest.mark.parametrize("config,dtype,expected", [
    ({"dtype": "float32"}, None, "float32"),
    ({"torch_dtype": "float32"}, "auto", "float32"),                # transformers 4's key
    ({}, None, "float32"),                                           # none named: transformers loads float32
    ({"text_config": {"dtype": "float32"}}, None, "float32"),        # a VLM that names it in its LM's config
    ({"dtype": "bfloat16"}, None, "auto"),                           # vLLM's auto keeps bf16 / f16 itself
    ({"dtype": "float32"}, "bf16", "bfloat16"),
    ({"dtype": "bfloat16"}, "f32", "float32"),
])
def test_auto_is_the_checkpoints_own_type(config, dtype, expected):
    assert vllm_dtype(config, dtype) == expected


def test_unknown_dtype_is_one_line():
    with pytest.raises(UnsupportedError, match="unknown dtype 'f8'"):
        vllm_dtype({}, "f8")
