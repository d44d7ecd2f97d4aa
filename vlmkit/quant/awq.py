"""AWQ (Lin et al. 2023): per input channel scales ``s`` that protect the channels with large activations,
searched per group of Linears sharing one input, folded into the module that produces that input.

Written here because the reference implementations need a per-family mapping of which norm feeds which
Linears (AutoAWQ's ``get_layers_for_scaling``, llm-compressor's ``AWQMapping`` regexes, which stop with
"AWQ needs to match a single smoothlayer" on a LLaVA replica). vlmkit finds the mapping numerically instead:
a candidate module (a norm or Linear whose output width is the group's input width) is the predecessor when
folding random scales into it and the group leaves the block's output unchanged (``find_predecessor``). A
group with no such module (GPT-NeoX's MLP output, attention output under grouped-query attention) is
quantized without scales, and the report says so.

Search, as AutoAWQ's ``_search_best_scale`` and llm-compressor's ``AWQModifier``: ``s = mean|x|^a /
mean|ŵ|^(1-a)`` (``duo_scaling``) normalised, ``a`` on a grid of 20, plus ``s = 1``; the loss is the squared
output error of the whole module the group feeds (the attention for q/k/v with the block's kwargs, the MLP for
gate/up, the Linear itself when alone) with the group's weights at ``Q(W·s)/s``, over all calibration tokens.
With ``awq_clip`` (off by default, as in llm-compressor, whose AWQ has no clipping), then AutoAWQ's
``auto_clip`` (``clip_search``): per output row and group, the range shrunk by ``1 … 0.55`` that minimises that
group's share of the Linear's output error. AutoAWQ skips clipping q and k by name ("due to qk bmm, it is hard
to clip precisely"); vlmkit keeps a Linear's clipping only where it lowers the output error of the module its
group feeds, which needs no names. On the demo VLM clipping lowered the held-out KLD on train-split questions
and raised it on the test split (README), hence off by default.

One stated difference: vlmkit calibrates each block on the quantized previous blocks' outputs (the pipeline's
one stream, as its GPTQ and llm-compressor's GPTQ do), where AutoAWQ searches every block on the source
model's activations (``_get_input_feat`` runs the block before scaling it) and so does llm-compressor (its
propagation pass runs with quantization disabled and the weights still float). Searching on the source
activations was measured on the demo's validation questions (train split, seed 1): totals 760, 760, 759, 763,
763 at 16 … 256 samples against 760, 763, 762, 763, 763 for the quantized stream, the same mean KLD. On the demo
vlmkit's AWQ and llm-compressor 0.14's (same 64 image questions) score the same and flip the same test
questions (``python -m bench.awq_reference``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

GRID = 20
NO_SCALES = "none"  # the label of s = 1


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


def scale_candidates(x_abs_mean: torch.Tensor, weights: list[torch.Tensor], group_size: int
                     ) -> list[tuple[str, torch.Tensor]]:
    """The grid searched: ``s = 1`` (no scaling: plain round-to-nearest, llm-compressor's first candidate
    with ``duo_scaling="both"``), then AutoAWQ's ``mean|x|^a / mean|ŵ|^(1-a)`` for ``a`` in ``0, 1/20 …
    19/20``, each normalised to ``max·min = 1``. With ``s = 1`` in the grid the search never picks scales
    that raise the calibration error above round-to-nearest's."""
    w_mean = _weight_mean(torch.cat([w.float() for w in weights]), group_size)
    out = [(NO_SCALES, torch.ones_like(x_abs_mean))]
    for step in range(GRID):
        ratio = step / GRID
        s = (x_abs_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        out.append((f"a={ratio:.2f}", s / (s.max() * s.min()).sqrt()))
    return out


def search_scales(candidates: list[tuple[str, torch.Tensor]], loss: Callable[[torch.Tensor], float]
                  ) -> tuple[torch.Tensor, str]:
    """(scales, label) of the candidate with the lowest ``loss(s)``."""
    values = [loss(s) for _, s in candidates]
    best = min(range(len(values)), key=values.__getitem__)
    return candidates[best][1], candidates[best][0]


class OutputError:
    """Squared output error of ``module`` (the smallest module holding a group of Linears: the attention for
    q/k/v, the MLP for gate/up, the Linear itself when alone) over its calls on the calibration inputs, with
    the group's weights replaced: AutoAWQ's and llm-compressor's loss, the block's kwargs included."""

    def __init__(self, module: nn.Module, linears: list[nn.Linear], calls: list[tuple[tuple, dict, torch.Tensor]]):
        self.module, self.linears, self.calls = module, linears, calls

    def __call__(self, weights: list[torch.Tensor]) -> float:
        originals = [lin.weight.detach().clone() for lin in self.linears]
        try:
            with torch.no_grad():
                for lin, w in zip(self.linears, weights):
                    lin.weight.copy_(w)
                total = 0.0
                for args, kwargs, reference in self.calls:
                    out = self.module(*args, **kwargs)
                    out = out[0] if isinstance(out, tuple) else out
                    total += float((out.float() - reference).pow(2).sum())
            return total
        finally:
            with torch.no_grad():
                for lin, w in zip(self.linears, originals):
                    lin.weight.copy_(w)

    def scaled(self, quantize: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], float]:
        """``loss(s)``: the error with every weight at ``Q(W·s)/s``."""
        weights = [lin.weight.detach().float().clone() for lin in self.linears]
        return lambda s: self([quantize(w * s) / s for w in weights])


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
    for step in range(int(steps * max_shrink)):  # shrink 1 … 0.55, AutoAWQ's grid
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
