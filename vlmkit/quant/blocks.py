"""One decoder block: which of its Linears share an input, their input statistics, and quantizing them.

Shared by the three methods: the statistics (Hessian ``Σ x xᵀ`` and mean ``|x|`` per input group) are
collected once per block from the calibration inputs, then each Linear is put on the grid (RTN, GPTQ, or
AWQ-scaled RTN) and replaced by its dequantized value, so the block's output is what the quantized
checkpoint computes and the next block is calibrated on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vlmkit.quant.awq import (
    NO_SCALES,
    OutputError,
    clip_search,
    find_predecessor,
    fold,
    scale_candidates,
    search_scales,
)
from vlmkit.quant.capture import BlockInput, run_block
from vlmkit.quant.gptq import Hessian, gptq_with_error
from vlmkit.quant.recipe import QuantSpec
from vlmkit.quant.rtn import QuantizedWeight, fake_quant, qparams, quant_args, rtn


@dataclass
class InputStats:
    hessian: Hessian
    abs_sum: torch.Tensor
    members: list[str] = field(default_factory=list)
    output_sq: dict[str, float] = field(default_factory=dict)  # member -> Σ ‖W x‖² over the calibration tokens

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.hessian.count, 1)


@dataclass
class LinearResult:
    name: str                       # relative to the block
    quantized: QuantizedWeight
    relative_error: float           # ‖(Ŵ − W) X‖ / ‖W X‖ over the calibration inputs
    awq: str | None = None          # "scales folded into <module> (a=0.35)" / why not
    input_sq_sum: torch.Tensor | None = None  # Σ x² per input column, in the stored (folded) weight's input space
    tokens: int = 0                 # calibration tokens behind input_sq_sum


@dataclass
class Fold:
    """AWQ scales folded into ``predecessor`` (divided) and ``members`` (multiplied); replayable on a fresh block."""

    predecessor: str
    members: list[str]
    scales: torch.Tensor


@dataclass
class BlockResult:
    linears: list[LinearResult]
    folds: list[Fold] = field(default_factory=list)


def apply_folds(block: nn.Module, folds: list[Fold]) -> None:
    """Replay the recorded folds on a freshly loaded block: the float weights the quantizer started from."""
    modules = dict(block.named_modules())
    for f in folds:
        fold(modules[f.predecessor], [modules[n] for n in f.members], f.scales)


def input_groups(block: nn.Module, names: list[str], item: BlockInput) -> list[list[str]]:
    """Linears that receive the very same input tensor (q/k/v after one norm; gate/up) form a group."""
    modules = dict(block.named_modules())
    seen: dict[int, list[str]] = {}
    keep: list[torch.Tensor] = []  # hold the inputs so no id is reused during the forward

    def hook(name: str):
        def record(_module: nn.Module, args: tuple) -> None:
            keep.append(args[0])
            seen.setdefault(id(args[0]), []).append(name)
        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        run_block(block, item)
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def collect_stats(block: nn.Module, groups: list[list[str]], items: list[BlockInput]) -> dict[str, InputStats]:
    modules = dict(block.named_modules())
    stats = {g[0]: InputStats(Hessian(modules[g[0]].in_features), torch.zeros(modules[g[0]].in_features), g)
             for g in groups}

    def hook(stat: InputStats):
        def record(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            stat.hessian.add(x)
            stat.abs_sum += x.abs().sum(0)
        return record

    def output_hook(stat: InputStats, name: str):
        def record(module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            y = output.detach().float()
            if module.bias is not None:
                y = y - module.bias.detach().float()
            stat.output_sq[name] = stat.output_sq.get(name, 0.0) + float(y.pow(2).sum(dtype=torch.float64))
        return record

    handles = [modules[leader].register_forward_pre_hook(hook(stat)) for leader, stat in stats.items()]
    handles += [modules[name].register_forward_hook(output_hook(stat, name))
                for stat in stats.values() for name in stat.members]
    try:
        for item in items:
            run_block(block, item)
    finally:
        for handle in handles:
            handle.remove()
    return stats


def quantize_block(block: nn.Module, names: list[str], group_of: dict[str, int], spec: QuantSpec,
                   items: list[BlockInput], scale_grid: torch.dtype | None) -> BlockResult:
    """Quantize ``names`` (Linears of ``block``) in place; returns per-Linear results and the AWQ folds."""
    groups = input_groups(block, names, items[0])
    stats = collect_stats(block, groups, items)
    modules = dict(block.named_modules())
    scales: dict[str, tuple[torch.Tensor, str | None]] = {}
    folds: list[Fold] = []
    for leader, stat in stats.items():  # AWQ: every fold first (one may touch another group's Linear)
        width = modules[leader].in_features
        scales[leader] = _awq(block, stat, spec, group_of, items, scale_grid, folds) if spec.method == "awq" \
            else (torch.ones(width), None)
    results: list[LinearResult] = []
    for leader, stat in stats.items():
        s, note = scales[leader]
        sq_sum = stat.hessian.sum.diagonal().float() / s.pow(2)  # the folded Linear sees x / s
        tokens = stat.hessian.count
        h = stat.hessian.release()
        args = quant_args(spec.bits, spec.symmetric, group_of[leader])  # one input width: one group size
        if spec.method == "gptq":  # the block's own weights are the originals until copied over below
            chosen, errors = _gptq_group({name: modules[name].weight.detach() for name in stat.members}, h, spec,
                                         args, scale_grid)
        else:
            originals = {name: modules[name].weight.detach().float().clone() for name in stat.members}
            if spec.method == "awq" and spec.awq_clip:
                chosen, note = _awq_clip(block, stat, originals, h / s.unsqueeze(0) / s.unsqueeze(1), group_of,
                                         spec, items, scale_grid, note)
            else:
                chosen = {name: _quantize(w, args, scale_grid) for name, w in originals.items()}
            errors = {name: _output_error(chosen[name].weight / s, w / s, h) for name, w in originals.items()}
        del h
        for name in stat.members:
            with torch.no_grad():
                modules[name].weight.copy_(chosen[name].weight)
            reference = 2.0 * stat.output_sq[name] / max(tokens, 1)  # ‖W X‖² in the Hessian's normalisation
            relative = (errors[name] / max(reference, 1e-30)) ** 0.5
            results.append(LinearResult(name, chosen[name], relative, note, sq_sum, tokens))
    return BlockResult(results, folds)


def _quantize(w: torch.Tensor, args, scale_grid: torch.dtype | None) -> QuantizedWeight:
    """Round-to-nearest: RTN's values, and AWQ's on its scaled weights."""
    return rtn(w, args, scale_grid)


def _gptq_group(originals: dict[str, torch.Tensor], h: torch.Tensor, spec: QuantSpec, args,
                scale_grid: torch.dtype | None) -> tuple[dict[str, QuantizedWeight], dict[str, float]]:
    """GPTQ on the Linears that share an input (q/k/v, gate/up) as one matrix, their rows stacked: GPTQ treats
    rows independently given the Hessian, so the result is the same as one Linear at a time, with one
    factorisation of the Hessian and one pass of the column loop. Returns each Linear's output error
    ``ΔW H ΔWᵀ`` too."""
    names = list(originals)
    q, row_error = gptq_with_error(torch.cat([originals[n].float() for n in names]), h, args, spec.damp,
                                   spec.act_order, scale_grid, spec.scale_search)
    chosen, errors, start = {}, {}, 0
    for name in names:
        rows = slice(start, start + originals[name].shape[0])
        start = rows.stop
        chosen[name] = QuantizedWeight(q.weight[rows], q.scale[rows], q.zero_point[rows], args)  # views
        errors[name] = float(row_error[rows].sum())
    return chosen, errors


def _awq_clip(block: nn.Module, stat: InputStats, originals: dict[str, torch.Tensor], h_scaled: torch.Tensor,
              group_of: dict[str, int], spec: QuantSpec, items: list[BlockInput], scale_grid: torch.dtype | None,
              note: str | None) -> tuple[dict[str, QuantizedWeight], str | None]:
    """AutoAWQ's clipping search on the scaled weights (inputs ``x / s``), per Linear; where the group feeds a
    larger module (q/k/v: the attention), a Linear keeps its clipping only if that lowers the module's output
    error: AutoAWQ skips clipping q and k by name ("due to qk bmm, it is hard to clip precisely"), vlmkit
    measures it."""
    plain, clipped = {}, {}
    for name, w in originals.items():
        args = quant_args(spec.bits, spec.symmetric, group_of[name])
        plain[name] = rtn(w, args, scale_grid)
        scale, zero = clip_search(w, h_scaled, args, scale_grid)
        clipped[name] = QuantizedWeight(fake_quant(w, scale, zero, args), scale, zero, args)
    modules = dict(block.named_modules())
    parent = _common_parent(stat.members)
    if parent in stat.members:  # the clipping search already minimised this Linear's own output error
        return clipped, note
    linears = [modules[n] for n in stat.members]
    error = OutputError(modules[parent], linears, _module_calls(block, modules[parent], items))
    chosen = dict(clipped)
    best = error([chosen[n].weight for n in stat.members])
    for name in stat.members:  # greedy: drop one Linear's clipping at a time, keep what lowers the error
        trial = {**chosen, name: plain[name]}
        value = error([trial[n].weight for n in stat.members])
        if value < best:
            chosen, best = trial, value
    unclipped = [n for n in stat.members if chosen[n] is plain[n]]
    if unclipped:
        note = f"{note}; not clipped (raises {parent}'s output error): {', '.join(unclipped)}"
    return chosen, note


def _output_error(quantized: torch.Tensor, original: torch.Tensor, h: torch.Tensor) -> float:
    """``ΔW H ΔWᵀ`` summed over rows (``‖(Ŵ − W) X‖²`` in the Hessian's normalisation), in the original input
    space; the relative error divides it by ``‖W X‖²``, accumulated from the Linear's own outputs."""
    delta = quantized - original
    return float(((delta @ h) * delta).sum(dtype=torch.float64))


def _awq(block: nn.Module, stat: InputStats, spec: QuantSpec, group_of: dict[str, int], items: list[BlockInput],
         scale_grid: torch.dtype | None, folds: list[Fold]) -> tuple[torch.Tensor, str]:
    modules = dict(block.named_modules())
    width = modules[stat.members[0]].in_features
    predecessor = find_predecessor(block, stat.members, lambda b: run_block(b, items[0]))
    if predecessor is None:
        return torch.ones(width), "no module to fold scales into: plain round-to-nearest"
    group = group_of[stat.members[0]]
    args = quant_args(spec.bits, spec.symmetric, group)

    def on_grid(w: torch.Tensor) -> torch.Tensor:
        scale, zero = qparams(w, args, scale_grid)
        return fake_quant(w, scale, zero, args)

    linears = [modules[n] for n in stat.members]
    parent = _common_parent(stat.members)
    error = OutputError(modules[parent], linears, _module_calls(block, modules[parent], items))
    candidates = scale_candidates(stat.abs_mean, [lin.weight.detach() for lin in linears], group)
    scales, label = search_scales(candidates, error.scaled(on_grid))
    if label == NO_SCALES:
        return scales, "no scales (s = 1 had the lowest output error on the calibration set)"
    fold(modules[predecessor], linears, scales)
    folds.append(Fold(predecessor, list(stat.members), scales))
    return scales, f"scales folded into {predecessor} ({label})"


def _common_parent(names: list[str]) -> str:
    """The smallest module holding all the names (``self_attn`` for q/k/v; the Linear itself when alone)."""
    if len(names) == 1:
        return names[0]
    parts = [n.split(".") for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _module_calls(block: nn.Module, module: nn.Module, items: list[BlockInput]) -> list[tuple[tuple, dict, torch.Tensor]]:
    """(args, kwargs, output) of every call of ``module`` while the block runs on the calibration items."""
    calls: list[tuple[tuple, dict, torch.Tensor]] = []

    def record(_module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        out = output[0] if isinstance(output, tuple) else output
        calls.append((args, kwargs, out.detach().float()))

    handle = module.register_forward_hook(record, with_kwargs=True)
    try:
        for item in items:
            run_block(block, item)
    finally:
        handle.remove()
    return calls
