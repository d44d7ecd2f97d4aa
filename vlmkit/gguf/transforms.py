"""Tensor rewrites that llama.cpp's graphs need, named so families can declare them as data.

Each transform takes the source array (PyTorch layout, outermost dimension first) and the text model's
hyper-parameters and returns the array to write. They mirror llama.cpp's converter
(``LlamaModel.permute``, ``GPTNeoXModel.modify_tensors``) and are checked by the logit parity tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _rope_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotates the two halves of each head (rotate_half); llama.cpp's LLAMA rope rotates adjacent
    pairs. Reordering each head's rows [x0..x(d/2-1), y0..] -> [x0, y0, x1, y1 ...] makes them agree."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def rope_permute_q(weights: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    return _rope_permute(weights, hp["n_head"])


def rope_permute_k(weights: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    return _rope_permute(weights, hp["n_head_kv"])


def neox_qkv_regroup(weights: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    """GPT-NeoX's fused QKV rows are [head0: q k v, head1: q k v ...]; llama.cpp views the fused
    output as [all q | all k | all v]."""
    n_head = hp["n_head"]
    per_head = weights.reshape(n_head, 3, weights.shape[0] // n_head // 3, *weights.shape[1:])
    return np.ascontiguousarray(per_head.swapaxes(0, 1)).reshape(weights.shape)


TRANSFORMS: dict[str, Callable[[np.ndarray, dict[str, Any]], np.ndarray]] = {
    "rope_permute_q": rope_permute_q,
    "rope_permute_k": rope_permute_k,
    "neox_qkv_regroup": neox_qkv_regroup,
}


# --- undoing them (``vlmkit diff`` compares a GGUF with its HF source in the HF layout) ---------------
def _rope_unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    return (weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def neox_qkv_ungroup(weights: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    n_head = hp["n_head"]
    grouped = weights.reshape(3, n_head, weights.shape[0] // n_head // 3, *weights.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(0, 1)).reshape(weights.shape)


INVERSE_TRANSFORMS: dict[str, Callable[[np.ndarray, dict[str, Any]], np.ndarray]] = {
    "rope_permute_q": lambda w, hp: _rope_unpermute(w, hp["n_head"]),
    "rope_permute_k": lambda w, hp: _rope_unpermute(w, hp["n_head_kv"]),
    "neox_qkv_regroup": neox_qkv_ungroup,
}
