"""GGUF from a quantized model, through vlmkit's GGUF exporter (``vlmkit.convert`` / ``vlmkit.gguf``).

Where the GGUF type's grid is the method's (symmetric groups of 32: Q4_0 holds ``d·q`` with q in [-8, 7],
Q8_0 ``d·q`` with q in [-128, 127], ``d`` float16, and vlmkit then rounds its scales to float16), each
quantized Linear is written as those blocks from the method's own integers and scales: llama.cpp computes
with exactly the weights vlmkit chose. The block layout is ggml's (gguf-py's ``quants.Q4_0`` / ``Q8_0``).
Otherwise (Q4_K_M, Q5_K, Q6_K, ... or another group size) the method's integers cannot be carried over, and
rounding them a second time onto ggml's grid would add both errors. Instead llama.cpp's own quantizer gets the
float weights the method started from, with AWQ's scales folded in (each quantized Linear ``W·s``, the module
before it ``/s``: the float model computes the same), and an importance matrix from the same image+text
calibration run (``Σ x²`` of each Linear's inputs, in the folded space ``x/s``), which llama.cpp's own imatrix
tool cannot compute (it only runs text). The matrix is also written as ``imatrix.gguf`` (llama.cpp's format,
:mod:`vlmkit.quant.imatrix`), so ``llama-quantize --imatrix`` gives the same tensors for any other type.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

GT = gguf.GGMLQuantizationType
_EXACT = {4: (GT.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0), 8: (GT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}
IMATRIX_FILE = "imatrix.gguf"


@dataclass
class Regrid:
    """What llama.cpp's quantizer needs when the GGUF type's grid is not the method's."""

    float_weight: Callable[[str], torch.Tensor]       # checkpoint name -> the float (AWQ-folded) weight
    importance: dict[str, tuple[torch.Tensor, int]]   # checkpoint name -> (Σ x² per input column, tokens)
    method: str
    dataset: str                                      # the calibration source, recorded in imatrix.gguf
    samples: int
    mean_tokens: int


def weight_args(compressed: dict):
    """The quantization args of one packed Linear, read back from its tensors' shapes."""
    from vlmkit.quant.rtn import quant_args

    cols = int(compressed["weight_shape"][-1])
    bits = compressed["weight_packed"].shape[-1] * 32 // cols
    groups = compressed["weight_scale"].shape[-1]
    return quant_args(int(bits), "weight_zero_point" not in compressed, cols // groups if groups > 1 else 0)


def dequantized_folder(hf_dir: Path, lm_rel: Path, packed: dict, out: Path,
                       float_weight: Callable[[str], torch.Tensor] | None = None) -> Path:
    """A float copy of the compressed-tensors export (same names, quantized Linears dequantized, or with
    ``float_weight`` the float weight each was rounded from)."""
    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from safetensors.torch import load_file, save_file

    shutil.copytree(hf_dir, out, ignore=shutil.ignore_patterns("vlmkit_calibration.json"))
    lm = out / lm_rel
    config = json.loads((lm / "config.json").read_text())
    config.pop("quantization_config")
    (lm / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for file in sorted(lm.glob("*.safetensors")):
        tensors = load_file(file)
        for name, compressed in packed.items():
            base = name.removesuffix(".weight")
            if f"{base}.weight_packed" in tensors:
                for key in compressed:
                    tensors.pop(f"{base}.{key}")
                if float_weight is not None:
                    tensors[name] = float_weight(name).float().contiguous()
                    continue
                scheme = QuantizationScheme(targets=["Linear"], weights=weight_args(compressed))
                tensors[name] = PackedQuantizationCompressor.decompress(compressed, scheme)["weight"].float()
        save_file(tensors, file, metadata={"format": "pt"})
    return out


def write_quantized_gguf(out: Path, hf_dir: Path, lm_rel: Path, packed: dict, gguf_type: str,
                         regrid: Regrid | None, verbose: bool) -> list[str]:
    """model.gguf (+ mmproj.gguf, + imatrix.gguf unless exact) into ``out`` (which may already hold other
    files). ``regrid`` None: the GGUF type's grid is the method's, its integers are written exactly."""
    from vlmkit.constants import FLOAT_TYPES
    from vlmkit.convert import convert

    scratch = Path(tempfile.mkdtemp(prefix=".vlmkit-gguf-", dir=hf_dir.parent))  # never inside hf_dir
    try:
        staged = scratch / "gguf"
        if regrid is None:
            floats = dequantized_folder(hf_dir, lm_rel, packed, scratch / "float")
            convert(floats, staged, dtype="f32", verify=False, verbose=verbose)
            _rewrite_exact(staged / "model.gguf", floats, lm_rel, packed)
        else:
            floats = dequantized_folder(hf_dir, lm_rel, packed, scratch / "float", regrid.float_weight)
            imatrix = scratch / IMATRIX_FILE
            _write_imatrix(imatrix, floats, lm_rel, regrid)
            convert(floats, staged, dtype=gguf_type, verify=False, verbose=verbose,
                    imatrix=None if gguf_type in FLOAT_TYPES else imatrix)
            imatrix.replace(staged / IMATRIX_FILE)
        out.mkdir(parents=True, exist_ok=True)
        for item in staged.iterdir():
            item.replace(out / item.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if regrid is None:
        return [f"GGUF {gguf_type}: the method's integers and float16 scales written as ggml blocks, exactly"]
    start = "the source weights with AWQ's scales folded in" if regrid.method == "awq" else "the source weights"
    return [(f"GGUF {gguf_type}: not the method's grid, so llama.cpp's quantizer rounds {start}, weighted by "
             f"an importance matrix from the same calibration run ({IMATRIX_FILE}); the "
             f"{regrid.method.upper()} integers of the HF export are not carried over")]


def _write_imatrix(path: Path, floats: Path, lm_rel: Path, regrid: Regrid) -> None:
    """imatrix.gguf keyed by the GGUF names the exporter gives the quantized Linears."""
    from vlmkit.gguf.lm import plan_lm
    from vlmkit.quant.imatrix import Importance, write_imatrix
    from vlmkit.readers import open_checkpoint

    prefix = "" if str(lm_rel) == "." else f"{lm_rel}."
    config = json.loads((floats / "config.json").read_text())
    with open_checkpoint(floats) as source:
        plan = plan_lm(floats, config, source, GT.F32)
    gguf_name = {t.source: t.name for t in plan.tensors}
    entries = {gguf_name[prefix + name]: Importance(sq_sum.numpy().astype(np.float32), tokens)
               for name, (sq_sum, tokens) in regrid.importance.items() if prefix + name in gguf_name}
    write_imatrix(path, entries, regrid.dataset, regrid.samples, regrid.mean_tokens)


def _rewrite_exact(model_gguf: Path, floats: Path, lm_rel: Path, packed: dict) -> None:
    from vlmkit.gguf.export import write_lm_gguf
    from vlmkit.gguf.lm import _canonical, _transform
    from vlmkit.gguf_keys import KEY_CONVERSION_ID
    from vlmkit.readers import open_checkpoint
    from vlmkit.runtime.llamacpp_backend import gguf_field

    config = json.loads((floats / "config.json").read_text())
    prefix = "" if str(lm_rel) == "." else f"{lm_rel}."
    by_source = {prefix + name: value for name, value in packed.items()}
    gtype, file_type = _EXACT[weight_args(next(iter(packed.values()))).num_bits]

    def replace(plan) -> None:
        for i, tensor in enumerate(plan.tensors):
            if tensor.source in by_source:
                transform = _transform(plan.text_family, _canonical(plan.family, tensor.source) or tensor.source)
                plan.tensors[i] = _exact_tensor(tensor, by_source[tensor.source], gtype, transform, plan.hp)

    tmp = model_gguf.with_suffix(".tmp")  # keeps the conversion id that pairs it with mmproj.gguf
    with open_checkpoint(floats) as source:
        write_lm_gguf(floats, config, tmp, "f32", source, gguf_field(model_gguf, KEY_CONVERSION_ID),
                      replace=replace, file_type=file_type)
    tmp.replace(model_gguf)


def _exact_tensor(tensor, compressed: dict, gtype: GT, transform: str | None, hp: dict):
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    from vlmkit.gguf.transforms import TRANSFORMS
    from vlmkit.gguf.writer import LazyTensor

    shape = tuple(int(v) for v in compressed["weight_shape"])
    bits = 4 if gtype == GT.Q4_0 else 8
    ints = unpack_from_int32(compressed["weight_packed"], bits, torch.Size(shape)).numpy().astype(np.int8)
    scales = compressed["weight_scale"].float().numpy().astype(np.float16)
    if transform is not None:
        ints, scales = TRANSFORMS[transform](ints, hp), TRANSFORMS[transform](scales, hp)
    block_bytes = 2 + (16 if bits == 4 else 32)
    nbytes = shape[0] * shape[1] // 32 * block_bytes

    def write(f) -> None:
        _blocks(ints, scales, bits).tofile(f)

    return LazyTensor(tensor.name, tensor.shape, gtype, nbytes, write, source=tensor.source)


def _blocks(ints: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """ggml's block layout (gguf-py ``Q4_0.quantize_blocks`` / ``Q8_0``): float16 d, then the integers
    (Q4_0: q+8 as nibbles, element j low and j+16 high in byte j)."""
    rows, cols = ints.shape
    q = ints.reshape(rows * cols // 32, 32)
    d = scales.reshape(-1, 1).view(np.uint8).reshape(-1, 2)
    if bits == 4:
        u = (q + 8).astype(np.uint8)
        body = u[:, :16] | (u[:, 16:] << np.uint8(4))
    else:
        body = q.view(np.uint8)
    return np.ascontiguousarray(np.concatenate([d, body], axis=1))
