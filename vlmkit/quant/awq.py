"""AWQ (Lin et al. 2023): per input channel scales ``s`` that protect the channels with large activations,
searched per group of Linears sharing one input, folded into the module that produces that input.

Written here because the reference implementations need a per-family mapping of which norm feeds which
Linears (AutoAWQ's ``get_layers_for_scaling``, llm-compressor's ``AWQMapping`` regexes, which stop with
"AWQ needs to match a single smoothlayer" on a LLaVA replica). vlmkit finds the mapping numerically instead:
a candidate module (a norm or Linear whose output width is the group's input width) is the predecessor when
folding random scales into it and the group leaves the block's output unchanged (``find_predecessor``). A
group with no such module (GPT-NeoX's MLP output, attention output under grouped-query attention) is
quantized without scales, and the report says so.

Search (AutoAWQ's ``duo_scaling``): ``s = mean|x|^a / mean|ŵ|^(1-a)`` normalised, ``a`` on a grid of 20;
the loss is the group's output error ``Σ tr(ΔW H ΔWᵀ)`` with ``H = Σ x xᵀ`` of the calibration inputs and
``ΔW = Q(W·s)/s − W``, exact over all calibration tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

GRID = 20


def _scalable(module: nn.Module, width: int) -> bool:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != width:
        return False
    return isinstance(module, nn.Linear) or weight.ndim == 1


def fold(predecessor: nn.Module, linears: list[nn.Linear], scales: torch.Tensor) -> None:
    """predecessor's output channels / s, the group's input columns · s: the block computes the same."""
    with torch.no_grad():
        predecessor.weight.div_(scales.view(-1, *([1] * (predecessor.weight.ndim - 1))).to(predecessor.weight))
        bias = getattr(predecessor, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.div_(scales.to(bias))
        for linear in linears:
            linear.weight.mul_(scales.to(linear.weight))


def find_predecessor(block: nn.Module, names: list[str], run: Callable[[nn.Module], torch.Tensor]) -> str | None:
    """The module of ``block`` into which the group's scales fold exactly, or None."""
    modules = dict(block.named_modules())
    width = modules[names[0]].in_features
    reference = run(block)
    scales = torch.empty(width).uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(0))
    candidates = [n for n, m in modules.items() if n and n not in names and _scalable(m, width)]
    candidates.sort(key=lambda n: isinstance(modules[n], nn.Linear))  # norms first
    for candidate in candidates:
        trial = copy.deepcopy(block)
        trial_modules = dict(trial.named_modules())
        fold(trial_modules[candidate], [trial_modules[n] for n in names], scales)
        out = run(trial)
        if (out - reference).abs().max() <= 1e-4 * reference.abs().max():
            return candidate
    return None


def search_scales(weights: list[torch.Tensor], x_abs_mean: torch.Tensor, group_size: int,
                  loss: Callable[[torch.Tensor], float]) -> tuple[torch.Tensor, float]:
    """(best scales, best ratio a) over AutoAWQ's grid ``s = mean|x|^a / mean|ŵ|^(1-a)``, by ``loss(s)``."""
    w_mean = _weight_mean(torch.cat([w.float() for w in weights]), group_size)
    best, best_loss, best_ratio = torch.ones_like(x_abs_mean), float("inf"), 0.0
    for step in range(GRID):
        ratio = step / GRID
        s = (x_abs_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        value = loss(s)
        if value < best_loss:
            best, best_loss, best_ratio = s, value, ratio
    return best, best_ratio


def hessian_loss(weights: list[torch.Tensor], hessian: torch.Tensor,
                 quantize: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], float]:
    """A lone Linear's output error ``tr(ΔW H ΔWᵀ)``, ``ΔW = Q(W·s)/s − W``: exact over all calibration tokens."""
    stacked = torch.cat([w.float() for w in weights])

    def loss(s: torch.Tensor) -> float:
        delta = quantize(stacked * s) / s - stacked
        return float(torch.einsum("oi,ij,oj->", delta, hessian, delta))
    return loss


def module_loss(module: nn.Module, linears: list[nn.Linear], calls: list[tuple[tuple, dict, torch.Tensor]],
                quantize: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], float]:
    """The output error of the smallest module holding the whole group (the attention for q/k/v, the MLP for
    gate/up), as AutoAWQ measures it: the module re-run with the group's weights at ``Q(W·s)/s``."""
    def loss(s: torch.Tensor) -> float:
        originals = [lin.weight.detach().clone() for lin in linears]
        try:
            with torch.no_grad():
                for lin, w in zip(linears, originals):
                    lin.weight.copy_(quantize(w.float() * s) / s)
                total = 0.0
                for args, kwargs, reference in calls:
                    out = module(*args, **kwargs)
                    out = out[0] if isinstance(out, tuple) else out
                    total += float((out.float() - reference).pow(2).sum())
            return total
        finally:
            with torch.no_grad():
                for lin, w in zip(linears, originals):
                    lin.weight.copy_(w)
    return loss


def _weight_mean(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean over rows of |w| normalised by its group's max (AutoAWQ's ``w_mean``), per input column."""
    group = group_size or weight.shape[1]
    blocks = weight.abs().reshape(weight.shape[0], -1, group)
    normalised = blocks / (blocks.amax(-1, keepdim=True) + 1e-6)
    return normalised.reshape(weight.shape).mean(0)


def clip_search(weight: torch.Tensor, hessian: torch.Tensor, args, scale_grid: torch.dtype | None = None,
                steps: int = 20, max_shrink: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """AWQ's clipping search (AutoAWQ ``auto_clip``): per (row, group) the min/max range shrunk by the factor
    in ``1 … 1 - max_shrink`` that minimises that group's output error ``δᵀ H_gg δ`` on the calibration inputs."""
    from compressed_tensors.quantization.utils import calculate_qparams

    from vlmkit.quant.rtn import fake_quant

    w = weight.float()
    rows, cols = w.shape
    group = args.group_size if args.strategy == "group" else cols
    blocks = w.reshape(rows, -1, group)
    lo, hi = blocks.amin(-1), blocks.amax(-1)
    h_blocks = torch.stack([hessian[g:g + group, g:g + group] for g in range(0, cols, group)])  # [G, gs, gs]
    best_err = torch.full(lo.shape, float("inf"))
    best_scale = best_zero = None
    for step in range(int(steps * max_shrink) + 1):
        shrink = 1 - step / steps
        scale, zero = calculate_qparams(lo * shrink, hi * shrink, args)
        if scale_grid is not None:
            scale = scale.to(scale_grid).float()
        delta = (fake_quant(w, scale, zero, args) - w).reshape(rows, -1, group)
        err = torch.einsum("rgi,gij,rgj->rg", delta, h_blocks, delta)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = scale if best_scale is None else torch.where(better, scale, best_scale)
        best_zero = zero if best_zero is None else torch.where(better, zero, best_zero)
    return best_scale, best_zero
