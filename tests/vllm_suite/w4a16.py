"""A compressed-tensors W4A16 checkpoint built with the compressed-tensors library (min-max scales, int4, groups of
32, ``pack-quantized``): the format `vlmkit quantize` writes, made here by the reference library itself."""

from __future__ import annotations

import shutil
from pathlib import Path

GROUP = 32


def build_w4a16(auto_class: str, source: Path, out: Path, ignore: tuple[str, ...] = ("lm_head",)) -> Path:
    """RTN W4A16 of every Linear but ``ignore`` (compressed-tensors' module-name patterns), through
    compressed-tensors' own quantization and compressor; the other files are copied."""
    import torch
    import transformers
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus, apply_quantization_config)
    from compressed_tensors.quantization.utils import calculate_qparams

    model = getattr(transformers, auto_class).from_pretrained(source, dtype=torch.bfloat16)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=GROUP)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=list(ignore),
                                                        format="pack-quantized"))
    for module in model.modules():
        if hasattr(module, "weight_scale"):
            groups = module.weight.data.float().reshape(module.weight.shape[0], -1, GROUP)
            scale, zero = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
            module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
            module.weight_zero_point.data.copy_(zero.reshape(module.weight_zero_point.shape))
            module.quantization_status = QuantizationStatus.FROZEN
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(out)
    for item in source.iterdir():  # tokenizer, processor, chat template, generation config
        if item.is_file() and item.name not in ("config.json", "model.safetensors"):
            shutil.copy2(item, out / item.name)
    return out
