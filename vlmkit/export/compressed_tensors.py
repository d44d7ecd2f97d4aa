"""A compressed-tensors checkpoint (``quant_method: compressed-tensors``, ``pack-quantized``) that stock
transformers loads with ``from_pretrained`` and vLLM serves.

Tensors keep the source checkpoint's on-disk names (the transformers-4 layout that transformers 5 still
writes and vLLM maps: ``language_model.model.layers.*``, ``vision_tower.vision_model.*``); a quantized
Linear's ``weight`` becomes ``weight_packed`` / ``weight_scale`` / ``weight_shape`` (+ ``weight_zero_point``
when asymmetric), as compressed-tensors' ``PackedQuantizationCompressor`` produced them. The ``ignore`` list
names every kept Linear both as transformers 5 builds it (``model.vision_tower.encoder...``: the names the
loader matches; listing only the on-disk spelling gets the tower wrapped as quantized and the load fails)
and in the on-disk spelling (what vLLM and transformers 4 match). Non-weight files are copied unchanged.

Asymmetric exports (``--asym``) also carry ``"dequantize": true`` in their ``quantization_config``: the tensors
are exactly what ``PackedQuantizationCompressor.compress`` writes and vLLM's ``CompressedTensorsWNA16`` reads
(the zero point packed along the rows, [rows / 8, groups] at 4 bits), but compressed-tensors' ``compress`` on
the meta device, which transformers uses to build the empty compressed model, leaves the zero point unpacked
([rows, groups]), so stock ``from_pretrained`` stops on the shape mismatch (llm-compressor issues #1618,
#1704). ``dequantize`` is transformers' own ``CompressedTensorsConfig`` field, read from ``config.json``: the
model is then built dense and each quantized Linear decompressed at load by compressed-tensors' own
``decompress``, which reads the packed zero point right. vLLM ignores the key and runs the packed weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from vlmkit.quant.recipe import QuantSpec, Recipe

SHARD_BYTES = 2 << 30
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json", ".gguf", ".npz")


def quantization_config(recipe: Recipe, spec: QuantSpec, disk_names: dict[str, str]) -> dict[str, Any]:
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    from vlmkit.quant.rtn import quant_args

    quantized = {name: d.group_size for name, d in recipe.decisions.items() if d.quantize}
    sizes = sorted(set(quantized.values()), reverse=True)
    groups = {}
    for number, size in enumerate(sizes):
        targets = ["Linear"] if len(sizes) == 1 else sorted(n for n, g in quantized.items() if g == size)
        groups[f"group_{number}"] = QuantizationScheme(targets=targets,
                                                       weights=quant_args(spec.bits, spec.symmetric, size))
    kept = sorted(recipe.kept)
    ignore = sorted({*kept, *(disk_names[n] for n in kept if n in disk_names)})
    config = QuantizationConfig(config_groups=groups, ignore=ignore, format="pack-quantized",
                                quantization_status="compressed")
    out = config.model_dump(exclude_none=True)
    out["quant_method"] = "compressed-tensors"
    if not spec.symmetric:
        out["dequantize"] = True
    return out


def load_notes(spec: QuantSpec) -> list[str]:
    """What a user loading the export should know (one line each, printed and in ``--json``'s notes)."""
    if spec.symmetric:
        return []
    return [("asymmetric export: stock transformers cannot build compressed-tensors' packed zero points "
             "(llm-compressor #1618 / #1704), so config.json says `dequantize: true`: from_pretrained decompresses "
             "the weights while loading (the same values) instead of at the first forward; vLLM runs them packed")]


def write_compressed_tensors(out: Path, folder: Path, lm_folder: Path, staged, recipe: Recipe, spec: QuantSpec,
                             packed: dict[str, dict[str, torch.Tensor]], replaced: dict[str, torch.Tensor]) -> None:
    """Write the quantized model into ``out`` (a custom-code checkpoint's LM into its sub-folder)."""
    out.mkdir(parents=True, exist_ok=True)
    _copy_tree(folder, out, skip=lm_folder if lm_folder != folder else None)
    lm_out = out / lm_folder.relative_to(folder) if lm_folder != folder else out
    lm_out.mkdir(parents=True, exist_ok=True)
    _copy_tree(lm_folder, lm_out, skip=None, recurse=False)
    _write_tensors(lm_out, staged.checkpoint, packed, replaced)
    config = json.loads((lm_folder / "config.json").read_text())
    disk_names = {n: (staged.disk_name(n + ".weight") or "").removesuffix(".weight") for n in recipe.decisions}
    config["quantization_config"] = quantization_config(recipe, spec, {k: v for k, v in disk_names.items() if v})
    (lm_out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _copy_tree(src: Path, dst: Path, skip: Path | None, recurse: bool = True) -> None:
    for item in src.iterdir():
        if item.name.startswith(".") or item == skip:
            continue
        if item.is_dir():
            if recurse:
                shutil.copytree(item, dst / item.name)
        elif not item.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(item, dst / item.name)


def _write_tensors(out: Path, checkpoint, packed: dict[str, dict[str, torch.Tensor]],
                   replaced: dict[str, torch.Tensor]) -> None:
    """All tensors in the source order, quantized ones packed; each ~2 GB shard is written as soon as it is
    full (so only one shard is in memory), with an index when there are several."""
    from safetensors.torch import save_file

    files: list[tuple[Path, list[str]]] = []
    shard: dict[str, torch.Tensor] = {}
    size = 0

    def flush() -> None:
        path = out / f".shard-{len(files) + 1}.safetensors"
        save_file(shard, path, metadata={"format": "pt"})
        files.append((path, list(shard)))
        shard.clear()

    for name in checkpoint.infos:
        if name in packed:
            base = name.removesuffix(".weight")
            tensors = {f"{base}.{key}": value for key, value in packed[name].items()}
        else:
            tensors = {name: replaced[name] if name in replaced else checkpoint.load(name)}
        for key, tensor in tensors.items():
            nbytes = tensor.numel() * tensor.element_size()
            if size + nbytes > SHARD_BYTES and shard:
                flush()
                size = 0
            shard[key] = tensor.contiguous()
            size += nbytes
    flush()
    if len(files) == 1:
        files[0][0].rename(out / "model.safetensors")
        return
    weight_map = {}
    for number, (path, names) in enumerate(files, 1):
        final = f"model-{number:05d}-of-{len(files):05d}.safetensors"
        path.rename(out / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
