"""Memory to load a checkpoint for inference per dtype / quantization, and to train it with Adam.

Computed from the real tensor shapes (not a parameter count times a constant): quantized formats
only shrink the 2-D weight matrices whose rows fit the format's block, the rest stays 16/32-bit,
as llama.cpp and weight-only int8/int4 (AWQ/GPTQ, group 128) schemes do. Like accelerate's
``estimate-memory``, the ``inference`` rows are weights only.

``estimate_run`` predicts what ``vlmkit run`` on llama.cpp peaks at (the process's RSS) answering one image
and a short question: the GGUF files as ``vlmkit convert`` writes them (language model at the scheme, the
vision tower and projector in ``mmproj.gguf`` at f16 for quantized types), once each (``vlmkit.llamacpp.settings``:
memory-mapped, the mapped pages of repacked tensors given back as llama.cpp loads them), the f16 KV cache the
backend allocates for that answer, llama.cpp's compute buffers (its graph for one micro-batch: hidden states,
the FFN's two intermediates and a logits row per token) and the process itself (interpreter, vlmkit, llama.cpp,
numpy, PIL: no torch, the image processor's geometry for SigLIP / CLIP is vlmkit's own). Measured against
``bench/seed_scale.py``. ``peak_rss_mb`` is the one measurement: the peak every ``--json`` report gives.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from vlmkit.constants import DTYPE_BITS, ggml_block, ggml_nbytes
from vlmkit.readers.base import TensorInfo

FLOAT_BYTES = {name: DTYPE_BITS[name.upper()] // 8 for name in ("f32", "bf16", "f16")}
INT_GROUP = 128   # weight-only int4/int8 group size (AWQ/GPTQ default)


@dataclass(frozen=True)
class MemoryRow:
    scheme: str
    bytes: int
    largest_tensor_bytes: int


def _is_matrix(info: TensorInfo) -> bool:
    return len(info.shape) == 2 and min(info.shape) > 1


def _tensor_bytes(info: TensorInfo, scheme: str, layer_count: int) -> int:
    numel = info.numel
    if scheme in FLOAT_BYTES:
        return numel * FLOAT_BYTES[scheme]
    if not _is_matrix(info):   # norms, biases, 1-D scales: kept at 16 bits (f32 in GGUF)
        return numel * (4 if scheme.startswith("q") else 2)
    rows_fit = info.shape[-1] % ggml_block("Q8_0") == 0
    if scheme in ("int8", "int4"):
        bits = 8 if scheme == "int8" else 4
        groups = -(-info.shape[-1] // INT_GROUP) * info.shape[0]
        return numel * bits // 8 + groups * (2 if bits == 8 else 4)   # fp16 scale (+ zero point for int4)
    if scheme == "q8_0":
        return ggml_nbytes("Q8_0", numel) if rows_fit else numel * 2
    if scheme == "q4_k_m":
        return ggml_nbytes(_q4_k_m_type(info, layer_count), numel) if rows_fit else numel * 2
    raise ValueError(scheme)


def _q4_k_m_type(info: TensorInfo, layer_count: int) -> str:
    """llama.cpp's Q4_K_M mix (llama_tensor_get_type): Q6_K for the output head and for attn_v / ffn_down
    in the first and last eighth of layers and every third layer between; Q4_K elsewhere.
    Rows not a multiple of 256 fall back to a 32-block type."""
    name = info.name
    k_ok = info.shape[-1] % ggml_block("Q4_K") == 0
    wants_q6 = name.endswith(("lm_head.weight", "embed_out.weight", "output.weight"))
    if any(key in name for key in ("v_proj", "down_proj", "attn_v", "ffn_down", "dense_4h_to_h")):
        layer = _layer_index(name)
        if layer is not None and layer_count:
            eighth = layer_count // 8
            wants_q6 = layer < eighth or layer >= 7 * eighth or (layer - eighth) % 3 == 2
    if not k_ok:
        return "Q8_0" if wants_q6 else "Q4_0"
    return "Q6_K" if wants_q6 else "Q4_K"


def _layer_index(name: str) -> int | None:
    for part in name.replace("/", ".").split("."):
        if part.isdigit():
            return int(part)
    return None


# names as convert --dtype spells them (vlmkit.constants); int8 / int4 are weight-only group-128 schemes
SCHEMES = ("f32", "bf16", "f16", "int8", "int4", "q8_0", "q4_k_m")


def estimate_memory(params: Iterable[TensorInfo], layer_count: int = 0) -> list[MemoryRow]:
    infos = list(params)
    rows = []
    for scheme in SCHEMES:
        sizes = [_tensor_bytes(info, scheme, layer_count) for info in infos]
        rows.append(MemoryRow(scheme, sum(sizes), max(sizes, default=0)))
    return rows


RUN_SCHEMES = ("f16", "q8_0", "q4_k_m")
RUN_PROCESS_BYTES = 120 << 20   # python, vlmkit, llama.cpp, numpy, PIL: measured (bench/seed_scale.py)
RUN_NEW_TOKENS = 64
RUN_TEXT_TOKENS = 32            # the chat template and a short question around the image


@dataclass(frozen=True)
class RunRow:
    scheme: str
    bytes: int              # the predicted peak RSS
    weights: int            # model.gguf + mmproj.gguf
    kv_cache: int
    compute: int


def estimate_run(lm: Iterable[TensorInfo], vision: Iterable[TensorInfo], text: dict, image_tokens: int,
                 n_ubatch: int | None = None) -> list[RunRow]:
    """``vlmkit run``'s peak RSS on llama.cpp per GGUF scheme (see the module docstring). ``lm`` / ``vision``:
    the language model's tensors and the tower's + projector's; ``text``: the text config (transformers'
    names); ``image_tokens``: the image's rows in the prompt (0: a text-only model)."""
    from vlmkit.llamacpp.settings import N_UBATCH
    from vlmkit.runtime.llamacpp_backend import KV_STEP, MAX_CTX

    lm, vision = list(lm), list(vision)
    layers, width = int(text["num_hidden_layers"]), int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    kv_width = int(text.get("num_key_value_heads") or heads) * int(text.get("head_dim") or width // heads)
    positions = image_tokens + RUN_TEXT_TOKENS + RUN_NEW_TOKENS
    kv = 2 * layers * kv_width * 2 * min(MAX_CTX, -(-positions // KV_STEP) * KV_STEP)
    ubatch = min(n_ubatch or N_UBATCH, positions)
    ffn = int(text.get("intermediate_size") or 4 * width)
    compute = 4 * ubatch * (int(text["vocab_size"]) + 2 * ffn + 4 * width)
    rows = []
    for scheme in RUN_SCHEMES:
        vision_scheme = scheme if scheme in FLOAT_BYTES else "f16"
        weights = (sum(_tensor_bytes(i, scheme, layers) for i in lm)
                   + sum(_tensor_bytes(i, vision_scheme, layers) for i in vision))
        rows.append(RunRow(scheme, weights + kv + compute + RUN_PROCESS_BYTES, weights, kv, compute))
    return rows


def training_bytes(param_count: int) -> dict[str, int]:
    """Adam: fp32 weights + grads + two moments = 16 B/param; mixed precision adds a 16-bit weight copy."""
    return {"adam_fp32": param_count * 16, "adam_mixed_bf16": param_count * 18}


def available_bytes() -> int:
    """Memory this process can still take without swapping or the OOM killer: the kernel's MemAvailable
    (free + reclaimable page cache, through psutil), capped by a cgroup v2 limit when one is set."""
    import psutil

    available = int(psutil.virtual_memory().available)
    return min(available, _cgroup_room() or available)


def _cgroup_room() -> int | None:
    from pathlib import Path

    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (the ``peak_rss_mb`` of every ``--json`` report).

    Linux: ``VmHWM`` from /proc/self/status, the high-water mark of this process's own address space, which
    starts afresh at exec. ``getrusage``'s ``ru_maxrss`` does not: a forked child's mark starts at the parent's
    resident set and exec keeps it, so a process started by a large parent (a bench that has built a 1 B model,
    a test runner) would report the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on the BSDs)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
