"""Quantizer numerics against the trusted implementations: compressed-tensors' own quantize / pack path,
ggml's block layout as gguf-py reads it, and GPTQ's defining property (lower output error than RTN)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from compressed_tensors.compressors import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationScheme
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
from compressed_tensors.quantization.utils import calculate_qparams

from vlmkit.export.gguf_quant import _blocks
from vlmkit.quant.gptq import Hessian, gptq
from vlmkit.quant.rtn import fake_quant, quant_args, rtn


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bits,group", [(4, 128), (4, 0), (8, 32)])
def test_rtn_and_packing_bit_exact_with_compressed_tensors(bits: int, group: int, symmetric: bool) -> None:
    torch.manual_seed(0)
    weight = torch.randn(48, 256) * torch.linspace(0.1, 3, 256)
    args = quant_args(bits, symmetric, group)
    ours = rtn(weight, args)
    # compressed-tensors' own path: min/max over its group layout, its calculate_qparams, its compressor
    width = group or weight.shape[1]
    blocks = weight.reshape(48, -1, width)
    scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    reference = PackedQuantizationCompressor.compress(
        {"weight": weight, "weight_scale": scale, "weight_zero_point": zero}, scheme)
    packed = PackedQuantizationCompressor.compress(
        {"weight": ours.weight, "weight_scale": ours.scale, "weight_zero_point": ours.zero_point}, scheme)
    assert packed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(packed[key], reference[key]), key
    assert torch.equal(ours.integers(), ct_quantize(weight, scale, zero, args, dtype=torch.int8))
    restored = PackedQuantizationCompressor.decompress(packed, scheme)["weight"]
    assert torch.equal(restored, ours.weight)


def test_gptq_lowers_output_error_below_rtn() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 256)
    x = torch.randn(4096, 256) @ torch.randn(256, 256) * 0.3  # correlated inputs: where GPTQ helps
    hessian = Hessian(256)
    hessian.add(x)
    args = quant_args(4, True, 128)

    def error(w: torch.Tensor) -> float:
        return float((x @ (w - weight).T).norm() / (x @ weight.T).norm())

    for act_order in (False, True):
        q = gptq(weight, hessian.matrix, args, act_order=act_order)
        assert error(q.weight) < 0.8 * error(rtn(weight, args).weight)
        assert torch.equal(fake_quant(q.weight, q.scale, q.zero_point, args), q.weight)  # on its grid


def test_awq_clip_search_never_raises_a_groups_output_error() -> None:
    """AutoAWQ's auto_clip: per (row, group) the shrink with the lowest ``δᵀ H_gg δ``; shrink 1 (plain min/max) is
    on the grid, so no group gets worse, and on heavy-tailed weights some get better."""
    from vlmkit.quant.awq import clip_search
    from vlmkit.quant.rtn import qparams

    torch.manual_seed(0)
    weight = torch.randn(32, 256) ** 3  # outliers: where clipping pays
    x = torch.randn(2048, 256) * torch.linspace(0.2, 2, 256)
    hessian = Hessian(256)
    hessian.add(x)
    args = quant_args(4, True, 128)

    def group_errors(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        delta = (fake_quant(weight, scale, zero, args) - weight).reshape(32, 2, 128)
        return torch.stack([torch.einsum("ri,ij,rj->r", delta[:, g], hessian.matrix[g * 128:(g + 1) * 128,
                                                                                    g * 128:(g + 1) * 128],
                                         delta[:, g]) for g in range(2)], 1)

    clipped, plain = group_errors(*clip_search(weight, hessian.matrix, args)), group_errors(*qparams(weight, args))
    assert bool((clipped <= plain * (1 + 1e-5)).all())
    assert float(clipped.sum()) < 0.9 * float(plain.sum())


@pytest.mark.parametrize("bits,gtype", [(4, gguf.GGMLQuantizationType.Q4_0), (8, gguf.GGMLQuantizationType.Q8_0)])
def test_exact_gguf_blocks_dequantize_to_the_methods_values(bits: int, gtype) -> None:
    """Our Q4_0 / Q8_0 blocks, read back by gguf-py's ggml-layout dequantizer, give scale·q exactly; and where
    the weight already sits on ggml's own grid, our blocks are byte-identical to gguf-py's quantizer."""
    torch.manual_seed(0)
    q = rtn(torch.randn(8, 128), quant_args(bits, True, 32), scale_grid=torch.float16)
    ints, scales = q.integers().numpy(), q.scale.numpy().astype(np.float16)
    raw = _blocks(ints, scales, bits)
    back = gguf.quants.dequantize(raw.reshape(8, -1), gtype)
    np.testing.assert_array_equal(back, q.weight.numpy())
    ggml = gguf.quants.quantize(q.weight.numpy(), gtype)  # ggml's rounding of the same values
    ggml_values = gguf.quants.dequantize(ggml, gtype)
    ours_on_ggml_grid = _blocks(*_ints_scales(ggml_values, gtype), bits)
    np.testing.assert_array_equal(ours_on_ggml_grid.reshape(ggml.shape), ggml)


def _ints_scales(values: np.ndarray, gtype) -> tuple[np.ndarray, np.ndarray]:
    """Integers and d of ggml-grid values, from gguf-py's own blocks."""
    raw = gguf.quants.quantize(values, gtype).reshape(-1, gguf.GGML_QUANT_SIZES[gtype][1])
    d = raw[:, :2].copy().view(np.float16).reshape(values.shape[0], -1)
    ints = np.rint(values / np.repeat(d.astype(np.float32), 32, axis=1)).astype(np.int8)
    return ints, d


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_output_error_is_the_direct_product(act_order: bool) -> None:
    """GPTQ's own scaled errors give each row's ``ΔW H ΔWᵀ`` (the dampening taken back out): the same number as
    ``2/N · ‖ΔW X‖²`` computed from the inputs, a dead input column included."""
    from vlmkit.quant.gptq import gptq_with_error

    torch.manual_seed(0)
    weight = torch.randn(96, 512)
    x = torch.randn(3000, 512) @ (torch.randn(512, 512) * 0.05 + torch.eye(512))
    x[:, 7] = 0
    hessian = Hessian(512)
    hessian.add(x)
    q, row_error = gptq_with_error(weight, hessian.matrix, quant_args(4, True, 128), act_order=act_order)
    delta = q.weight - weight
    delta[:, 7] = 0  # an input that is always 0: GPTQ zeroes its column, the output never sees it
    direct = (x.double() @ delta.double().T).pow(2).sum(0) * 2 / x.shape[0]
    torch.testing.assert_close(row_error, direct, rtol=1e-4, atol=0)
    assert torch.equal(q.weight, gptq(weight, hessian.matrix, quant_args(4, True, 128), act_order=act_order).weight)


class _ToyBlock(torch.nn.Module):
    """Two Linears sharing an input (stacked by GPTQ), one fed by them, one with a bias."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.up = torch.nn.Linear(64, 96, bias=False), torch.nn.Linear(64, 96, bias=True)
        self.down = torch.nn.Linear(96, 64, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.silu(self.gate(hidden)) * self.up(hidden))


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_block_relative_error_is_measured_on_the_inputs(method: str) -> None:
    """The quality report's per-Linear ``‖(Ŵ − W) X‖ / ‖W X‖``, however computed, equals the direct ratio on the
    calibration inputs each Linear saw (the original block's inputs: what its Hessian was built from)."""
    from vlmkit.quant.blocks import quantize_block
    from vlmkit.quant.capture import BlockInput
    from vlmkit.quant.recipe import QuantSpec

    torch.manual_seed(0)
    block = _ToyBlock()
    items = [BlockInput(torch.randn(1, 12, 64) @ torch.randn(64, 64), (), {}) for _ in range(6)]
    originals = {name: module.weight.detach().clone() for name, module in block.named_children()}
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in originals}
    handles = [module.register_forward_pre_hook(lambda _m, args, name=name: inputs[name].append(args[0].detach()))
               for name, module in block.named_children()]
    with torch.no_grad():
        for item in items:
            block(item.hidden)
    for handle in handles:
        handle.remove()
    done = quantize_block(block, list(originals), dict.fromkeys(originals, 32), QuantSpec(method, 4, 32), items, None)
    for result in done.linears:
        x = torch.cat(inputs[result.name]).reshape(-1, originals[result.name].shape[1]).double()
        w = originals[result.name].double()
        direct = float((x @ (result.quantized.weight.double() - w).T).norm() / (x @ w.T).norm())
        assert result.relative_error == pytest.approx(direct, rel=1e-4), result.name
        assert 0.01 < direct < 0.5


@pytest.mark.parametrize("symmetric", [True, False])
def test_searched_scales_never_round_a_group_worse_than_min_max(symmetric: bool) -> None:
    """GPTQ's default scales: per (row, group) the shrunk range with the lowest squared rounding error; plain
    min/max is one of the candidates, so no group gets worse, and on heavy-tailed weights most get better."""
    from vlmkit.quant.gptq import search_qparams
    from vlmkit.quant.rtn import qparams

    torch.manual_seed(0)
    weight = torch.randn(64, 256) ** 3
    args = quant_args(4, symmetric, 128)

    def group_errors(scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return (fake_quant(weight, scale, zero, args) - weight).square().reshape(64, 2, 128).sum(-1)

    searched, plain = group_errors(*search_qparams(weight, args)), group_errors(*qparams(weight, args))
    assert bool((searched <= plain).all())
    assert float((searched < plain).float().mean()) > 0.5
    assert float(searched.sum()) < 0.97 * float(plain.sum())
