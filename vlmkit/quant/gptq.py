"""GPTQ (Frantar et al. 2022): quantize a Linear's columns one at a time, each time spreading the rounding
error over the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs.

Written here because the reference implementations (llm-compressor, GPTQModel) run it inside their own
model-wrapping pipelines, which need per-family definitions and replace torch/transformers. The algorithm
follows llm-compressor's ``quantize_weight``: min/max scales computed once from the original weight
(``actorder="weight"`` when act-order is on: static groups, so no ``g_idx`` is needed), dampening 1 % of the
mean diagonal, Cholesky of the inverse Hessian, lazy batch updates of 128 columns. Values on the grid come
from compressed-tensors' ``fake_quantize``, as in :mod:`vlmkit.quant.rtn`.
"""

from __future__ import annotations

import torch

from vlmkit.quant.rtn import QuantizedWeight, fake_quant, qparams

BLOCK = 128


class Hessian:
    """Running ``2/N · Σ x xᵀ`` of a Linear's inputs. Rows are buffered and multiplied in float32 a few
    thousand at a time (one large product, not one per sample), each product added to a float64 sum:
    N reaches 10⁵ tokens."""

    FLUSH_ROWS = 4096

    def __init__(self, columns: int):
        self._sum = torch.zeros(columns, columns, dtype=torch.float64)
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        rows = x.reshape(-1, x.shape[-1]).float()
        self._pending.append(rows)
        self._pending_rows += rows.shape[0]
        self.count += rows.shape[0]
        if self._pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            rows = torch.cat(self._pending)
            self._sum += (rows.T @ rows).double()
            self._pending, self._pending_rows = [], 0

    @property
    def sum(self) -> torch.Tensor:
        self._flush()
        return self._sum

    @property
    def matrix(self) -> torch.Tensor:
        return (2.0 * self.sum / max(self.count, 1)).float()


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    h = h.clone()
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True)


def gptq(weight: torch.Tensor, hessian: torch.Tensor, args, damp: float = 0.01, act_order: bool = False,
         scale_grid: torch.dtype | None = None) -> QuantizedWeight:
    w = weight.float().clone()
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    scale, zero = qparams(w, args, scale_grid)
    group = args.group_size if args.strategy == "group" else w.shape[1]
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(w.shape[1])
    w, h = w[:, perm], h[perm][:, perm]
    group_of = perm // group  # group of each (permuted) column in the original order
    hinv = _inverse_cholesky(h, damp)
    q = torch.zeros_like(w)
    channel = args.model_copy(update={"strategy": "channel", "group_size": None})  # one column = one channel
    for i1 in range(0, w.shape[1], BLOCK):
        i2 = min(i1 + BLOCK, w.shape[1])
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(w.shape[0], i2 - i1), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            g = int(group_of[i1 + i])
            column = fake_quant(w1[:, i:i + 1], scale[:, g:g + 1], zero[:, g:g + 1], channel)[:, 0]
            q[:, i1 + i] = column
            err = (w1[:, i] - column) / hinv1[i, i]
            w1[:, i:] -= err.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    q = q[:, torch.argsort(perm)]
    return QuantizedWeight(q, scale, zero, args)
