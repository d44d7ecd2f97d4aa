"""The quantization grid, and round-to-nearest on it.

Scales, zero points, rounding and clamping are compressed-tensors' own functions (``calculate_qparams``,
``quantize``, ``fake_quantize``), so the values vlmkit chooses are exactly the ones the checkpoint's
consumers (transformers, vLLM) reconstruct. Only the min/max per group is computed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import fake_quantize, quantize
from compressed_tensors.quantization.utils import calculate_qparams

from vlmkit.quant.recipe import CHANNEL


@dataclass
class QuantizedWeight:
    """A Linear's weight on the grid: ``weight`` is the dequantized float32 value (what the quantized
    model computes with), ``scale`` / ``zero_point`` are per (row, group)."""

    weight: torch.Tensor | None  # None once packed for export (vlmkit.quant.pipeline)
    scale: torch.Tensor
    zero_point: torch.Tensor
    args: QuantizationArgs

    def integers(self) -> torch.Tensor:
        return quantize(self.weight, self.scale, self.zero_point, self.args, dtype=torch.int8)


def quant_args(bits: int, symmetric: bool, group_size: int) -> QuantizationArgs:
    if group_size == CHANNEL:
        return QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="channel")
    return QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="group",
                            group_size=group_size)


def qparams(weight: torch.Tensor, args: QuantizationArgs, scale_grid: torch.dtype | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Min/max scales and zero points of ``weight`` [rows, cols]: shape [rows, groups] ([rows, 1] per channel).

    ``scale_grid`` rounds the scales to a float type first (float16 for GGUF's Q4_0 / Q8_0 blocks)."""
    w = weight.float()
    group = args.group_size if args.strategy == "group" else w.shape[1]
    blocks = w.reshape(w.shape[0], -1, group)
    scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args)
    if scale_grid is not None:
        scale = scale.to(scale_grid).float()
    return scale, zero


def fake_quant(weight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, args: QuantizationArgs
               ) -> torch.Tensor:
    return fake_quantize(weight.float(), scale, zero, args)


def rtn(weight: torch.Tensor, args: QuantizationArgs, scale_grid: torch.dtype | None = None) -> QuantizedWeight:
    scale, zero = qparams(weight, args, scale_grid)
    return QuantizedWeight(fake_quant(weight, scale, zero, args), scale, zero, args)
