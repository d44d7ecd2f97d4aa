"""Write an HF LLaVA's vision tower + projector as ``mmproj.gguf`` for llama.cpp's multimodal library (mtmd).

Public API::

    write_mmproj(model_dir: Path, config: dict, checkpoint: Checkpoint | None, out_path: Path,
                 dtype: str = "f32") -> MmprojResult

``config`` is the model's ``config.json`` (a LLaVA config: SigLIP or CLIP ``vision_config``, MLP projector);
``checkpoint`` the validated ``vlmkit.readers.Checkpoint`` that convert() already holds (None: opened here);
``dtype`` one of ``MMPROJ_DTYPES`` (f32 / f16 / bf16 / q8_0) for the matmul weights (``mmproj_dtype(lm_dtype)``
picks it when not asked: a quantized language model gets an f16 mmproj, as llama.cpp ships them). The file
appears atomically.

q8_0 follows llama.cpp's own converter (``convert_hf_to_gguf.py --outtype q8_0 --mmproj``: ``ModelBase.
prepare_tensors`` + ``MmprojModel.tensor_force_quant``; this clip.cpp has no quantize function of its own and
loads any ggml type): the 2-D matmul weights of the tower and projector are quantized with gguf-py's
``gguf.quants.quantize`` (the converter's quantizer); a weight whose rows the 32-wide block does not divide
(SigLIP-so400m's ``fc2``: 4304 inputs) is written f16, as the converter falls back on ``QuantError``; the
patch kernel is f32 (the converter's choice for a non-f16 file; bf16 stays bf16, see below), and norms,
biases, class and position embeddings stay f32. ``MmprojResult.kept`` names each tensor not at q8_0 and why.

Why this is written here instead of running llama.cpp's ``convert_hf_to_gguf.py --mmproj``: that converter
refuses ``siglip_vision_model`` / ``clip_vision_model`` towers inside ``LlavaForConditionalGeneration``
("Unsupported model type"). What mtmd's llava graph (``tools/mtmd/models/llava.cpp``, projector "mlp")
needs, read from clip.cpp of llama-cpp-python 0.3.36:

* ``clip.vision.feature_layer = [L]`` (non-negative, hidden_states index) and ``block_count = L``: the graph
  runs ``L`` blocks and returns their output, i.e. transformers' ``hidden_states[L]``. Without the key it runs
  ``block_count - 1`` blocks (llama.cpp issue #25817), so the key is always written and later blocks dropped.
* The tower's ``post_layernorm`` (and SigLIP's attention-pool ``head``) act after ``hidden_states[-1]``;
  LLaVA never uses them, and a ``v.post_ln`` tensor would be applied by the graph, so they are dropped.
* mtmd always returns ``N = (image_size / patch_size)**2`` rows and drops the first token exactly when
  ``v.class_embd`` exists. transformers' "default" strategy drops the first token of every tower, so a
  SigLIP tower with "default" (llava-calm2-siglip) gets ``N - 1`` tokens there and ``N`` in mtmd, the
  extra one (patch 0) first. ``vlmkit.mmproj.llamacpp_rows`` / ``vlmkit.mmproj.hf_rows`` record which mtmd
  rows equal which transformers rows, for vlmkit's runtime and ``verify_image_embeddings``.
* CLIP's class token: this llama.cpp puts it *after* the patches but still adds position rows
  ``0..N`` in order (issue #25814). The position table is written in that order (patch rows first, the CLS
  row last) so every token gets its own position; what remains of the bug is that mtmd returns the CLS
  output (last row) in place of patch 0's: rows ``0..N-2`` equal transformers' ``1..N-1``.
* ``ggml_conv_2d`` (the patch embedding) im2cols through f16 unless the kernel is bf16; a bf16 source
  kernel is therefore kept bf16 (lossless, and the convolution runs in f32).
* ``mm.0`` / ``mm.2`` (``TN_LLAVA_PROJ``) for ``linear_1`` / ``linear_2``; gguf-py's own table maps
  ``linear_1`` to ``mm.1`` (another projector's layout), so the names are built from its constants here.
* mtmd swaps ``ffn_up``/``ffn_down`` when ``ffn_down``'s first dim equals ``n_embd`` (a fix for old
  files); with ``intermediate_size == hidden_size`` that test is always true, so the two are written
  under each other's names for mtmd to swap back.
* mtmd resizes images its own way (LLaVA: letterbox + bicubic); ``vlmkit.mmproj.image_processor`` keeps the
  checkpoint's image-processor config (JSON, as transformers loads it) so that vlmkit's runtime hands mtmd
  that processor's pixels at the input size (``vlmkit.llamacpp.pixels.ModelPixels``), where mtmd's resize is a no-op.
* the projector's activation is ggml's tanh GELU (erf GELU in transformers' default "gelu"); the tower's
  ``quick_gelu`` / tanh GELU / SiLU are selected with ``clip.use_gelu`` / ``clip.use_silu``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from vlmkit.constants import FLOAT_TYPES, ggml_block, ggml_nbytes, output_type
from vlmkit.errors import CheckpointError, UnsupportedError, VlmkitError
from vlmkit.families import family_for
from vlmkit.families.base import MmprojMap, has_fields
from vlmkit.readers.base import one_line

GT = gguf.GGMLQuantizationType
T = gguf.MODEL_TENSOR
FILE_TYPES = {GT.F32: gguf.LlamaFileType.ALL_F32, GT.F16: gguf.LlamaFileType.MOSTLY_F16,
              GT.BF16: gguf.LlamaFileType.MOSTLY_BF16, GT.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0}
MMPROJ_DTYPES = (*FLOAT_TYPES, "q8_0")
QUANT_FALLBACK = GT.F16    # llama.cpp's converter: a tensor gguf-py cannot quantize (QuantError) is written f16

# Keys gguf-py 0.19 has no constant for (values from tools/mtmd/clip-impl.h).
KEY_FEATURE_LAYERS = "clip.vision.feature_layer"      # KEY_FEATURE_LAYERS
PROJECTOR_MLP = "mlp"                                  # PROJECTOR_TYPE_MLP
from vlmkit.gguf_keys import (  # noqa: E402  (written here)
    KEY_HF_ROWS, KEY_IMAGE_PROCESSOR, KEY_LLAMACPP_ROWS, KEY_POSITION_ORDER)

# HF activation -> (clip.* flag, exact in ggml?). ggml's gelu is the tanh form (CPU: fp16 lookup table).
TOWER_ACTS = {"quick_gelu": (None, True), "gelu_pytorch_tanh": ("gelu", True), "gelu_new": ("gelu", True),
              "gelu": ("gelu", False), "silu": ("silu", True)}
PROJECTOR_ACTS = {"gelu": False, "gelu_pytorch_tanh": True, "gelu_new": True}


@dataclass
class MmprojResult:
    """What was written: the file, its metadata, the tensor mapping and what was left out, and why."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, str] = field(default_factory=dict)        # gguf name -> source tensor
    dropped: dict[str, str] = field(default_factory=dict)        # source tensor -> reason
    kept: dict[str, str] = field(default_factory=dict)           # quantized file: gguf name -> type and why
    approximations: list[str] = field(default_factory=list)      # runtime differences that remain


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    gtype: GT
    produce: Callable[[], np.ndarray]     # the data in PyTorch layout (any float dtype)
    source: str


def mmproj_dtype(lm_dtype: str, asked: str | None = None) -> str:
    """The mmproj dtype: ``asked`` (f16, Q8_0, fp32 ... checked against ``MMPROJ_DTYPES``) when given, else
    the language model's float type, or f16 for a quantized language model."""
    if asked is None:
        return lm_dtype if lm_dtype in FLOAT_TYPES else "f16"
    try:
        name = output_type(asked).name     # the --dtype spellings: fp16, Q8_0, float32 ...
    except UnsupportedError:
        name = asked
    if name not in MMPROJ_DTYPES:
        raise UnsupportedError(None, f"--mmproj-dtype {asked}: choose one of {', '.join(MMPROJ_DTYPES)}")
    return name


def is_llava_vision(config: dict[str, Any]) -> bool:
    """Whether ``config`` is a LLaVA whose vision side ``write_mmproj`` handles."""
    mmproj = family_for(config)[0].mmproj
    return mmproj is not None and (config.get("vision_config") or {}).get("model_type") in mmproj.towers


def write_mmproj(model_dir: Path, config: dict[str, Any], checkpoint=None, out_path: Path | None = None,
                 dtype: str = "f32", conversion_id: str | None = None) -> MmprojResult:
    """Write ``out_path`` (default ``model_dir/mmproj.gguf``) atomically; see the module docstring."""
    from vlmkit.readers import open_checkpoint

    model_dir = Path(model_dir)
    out_path = Path(out_path) if out_path is not None else model_dir / "mmproj.gguf"
    if dtype not in MMPROJ_DTYPES:
        raise UnsupportedError(out_path, f"mmproj dtype {dtype!r}: use one of {', '.join(MMPROJ_DTYPES)}")
    source = checkpoint if checkpoint is not None else open_checkpoint(model_dir)
    hp = vision_hparams(model_dir, config)
    want = output_type(dtype).ggml_type
    tensors, dropped = plan_tensors(model_dir, hp, source, want)
    metadata = _metadata(hp, want, model_dir.name)
    if conversion_id:
        from vlmkit.gguf.export import KEY_CONVERSION_ID

        metadata[KEY_CONVERSION_ID] = conversion_id
    _write_atomic(out_path, metadata, tensors)
    return MmprojResult(out_path, metadata, {t.name: t.source for t in tensors}, dropped, kept_at_float(tensors, want),
                        hp["approximations"])


# --- hyper-parameters --------------------------------------------------------------------------------

def vision_hparams(model_dir: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Everything the mmproj metadata needs, from the config (transformers' defaults filled in) and the
    image processor files. Raises UnsupportedError for what mtmd's llava graph cannot reproduce."""
    mmproj = family_for(config)[0].mmproj
    full = full_config(model_dir, config, mmproj)
    vis, text = full["vision_config"], full["text_config"]
    towers = mmproj.towers if mmproj else {}
    if vis.get("model_type") not in towers:
        raise UnsupportedError(model_dir, f"mmproj: vision tower {vis.get('model_type')!r} "
                                          f"(supported: {', '.join(towers) or 'none for this family'})")
    has_cls = towers[vis["model_type"]]
    n_layer = vis["num_hidden_layers"]
    layers = feature_layers(model_dir, full["vision_feature_layer"], n_layer)
    image_size, patch_size = _square(model_dir, vis["image_size"]), _square(model_dir, vis["patch_size"])
    rows = row_map(model_dir, full["vision_feature_select_strategy"], has_cls, (image_size // patch_size) ** 2)
    approximations: list[str] = []
    tower_flag = _activation(model_dir, "vision_config.hidden_act", vis["hidden_act"], TOWER_ACTS, approximations)
    _activation(model_dir, "projector_hidden_act", full["projector_hidden_act"],
                {k: (None, v) for k, v in PROJECTOR_ACTS.items()}, approximations)
    mean, std = image_normalization(model_dir)
    return {
        "map": mmproj, "has_cls": has_cls, "n_layer": n_layer, "feature_layers": layers, "block_count": max(layers),
        "n_embd": vis["hidden_size"], "n_ff": vis["intermediate_size"], "n_head": vis["num_attention_heads"],
        "eps": vis["layer_norm_eps"], "image_size": image_size, "patch_size": patch_size,
        "n_embd_text": text["hidden_size"], "llamacpp_rows": rows[0], "hf_rows": rows[1],
        "tower_act": tower_flag, "image_mean": mean, "image_std": std, "approximations": approximations,
        "image_processor": image_processor_json(model_dir),
    }


def full_config(model_dir: Path, config: dict[str, Any], mmproj: MmprojMap | None,
                complete: bool = False) -> dict[str, Any]:
    """The config with every field the mmproj reads: as it is when it sets them all (transformers 5 saves
    every field), else completed by transformers' config class (transformers 4 saved only non-default
    values: tower eps and activation, LLaVA's feature layer / select strategy / projector activation).
    That class imports torch (~250 MB), which a conversion that only streams tensors does without.
    ``complete=True`` always goes through transformers (the tests compare the two)."""
    if not complete and mmproj is not None and has_fields(config, mmproj.config_required):
        return config
    from transformers import LlavaConfig

    try:
        return LlavaConfig(**config).to_dict()
    except Exception as error:  # noqa: BLE001 - transformers' validators raise several types
        raise CheckpointError(model_dir / "config.json", f"not a LLaVA config: {one_line(error)}") from None


def feature_layers(model_dir: Path, value: int | list[int], n_layer: int) -> list[int]:
    """transformers' ``vision_feature_layer`` (negative allowed) as hidden_states indices, 1..n_layer.
    Several layers are concatenated in list order by transformers and in layer order by mtmd."""
    values = [value] if isinstance(value, int) else list(value)
    layers = [v if v >= 0 else n_layer + 1 + v for v in values]
    if any(not 1 <= v <= n_layer for v in layers):
        raise UnsupportedError(model_dir, f"mmproj: vision_feature_layer {value} outside 1..{n_layer} "
                                          "(layer 0, the patch embeddings, is not supported by mtmd)")
    if layers != sorted(set(layers)):
        raise UnsupportedError(model_dir, f"mmproj: vision_feature_layer {value} must be increasing "
                                          "(mtmd concatenates feature layers in layer order)")
    return layers


def row_map(model_dir: Path, strategy: str, has_cls: bool, n_patches: int) -> tuple[list[int], list[int]]:
    """([start, stop) of mtmd's rows, [start, stop) of transformers' rows) that hold the same tokens."""
    if has_cls and strategy == "default":      # mtmd [p1 .. p(N-1), CLS]  vs  hf [p0 .. p(N-1)]
        return [0, n_patches - 1], [1, n_patches]
    if not has_cls and strategy == "default":  # mtmd [p0 .. p(N-1)]       vs  hf [p1 .. p(N-1)]
        return [1, n_patches], [0, n_patches - 1]
    if not has_cls and strategy == "full":
        return [0, n_patches], [0, n_patches]
    raise UnsupportedError(model_dir, f"mmproj: vision_feature_select_strategy {strategy!r} with a class "
                                      "token: mtmd always drops the class token")


def _activation(model_dir: Path, key: str, act: str, table: dict, approximations: list[str]) -> str | None:
    if act not in table:
        raise UnsupportedError(model_dir, f"mmproj: {key} {act!r} has no mtmd equivalent "
                                          f"(supported: {', '.join(table)})")
    flag, exact = table[act]
    if not exact:
        approximations.append(f"{key} {act!r} (erf) runs as ggml's tanh GELU")
    return flag


def _square(model_dir: Path, value: int | list[int]) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise UnsupportedError(model_dir, f"mmproj: non-square size {value} (mtmd's llava graph is square)")
    return int(value[0])


def image_processor_config(model_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """(file, config) of the checkpoint's image processor: preprocessor_config.json, or the
    ``image_processor`` entry of transformers 5's processor_config.json; None when neither has one."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = Path(model_dir) / name
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(path, f"invalid JSON ({error.msg} at line {error.lineno})") from None
        cfg = cfg.get("image_processor", cfg)
        if "image_mean" in cfg and "image_std" in cfg:
            return path, cfg
    return None


def image_processor_json(model_dir: Path) -> str | None:
    """The checkpoint's saved image-processor config (its class name included) as transformers writes it
    (``to_json_string``: sorted keys, indent 2), for the runtime to load that processor and resize exactly
    as it does (``vlmkit.llamacpp.pixels.ModelPixels``, which also fills in the defaults an older file leaves
    out); None when the saved config does not name its processor class (transformers would guess one from
    config.json). Read from the JSON, not through transformers: its image processors import torch."""
    found = image_processor_config(model_dir)
    if found is None or not isinstance(found[1].get("image_processor_type"), str):
        return None
    return json.dumps(found[1], indent=2, sort_keys=True) + "\n"


def image_normalization(model_dir: Path) -> tuple[list[float], list[float]]:
    """Image mean / std from the image processor's saved JSON (mtmd normalizes pixels/255 with them)."""
    found = image_processor_config(model_dir)
    if found is None:
        raise CheckpointError(model_dir, "no preprocessor_config.json / processor_config.json with image_mean "
                                         "and image_std: the mmproj needs the image normalization")
    path, cfg = found
    if not cfg.get("do_normalize", True):
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return _three(path, cfg["image_mean"]), _three(path, cfg["image_std"])


def _three(path: Path, value: float | list[float]) -> list[float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise CheckpointError(path, f"image mean/std {value} is not one value per RGB channel")
    return values


def _metadata(hp: dict[str, Any], gtype: GT, name: str) -> dict[str, Any]:
    """GGUF key -> value (written in this order), with gguf-py's key constants."""
    cv, ln = gguf.Keys.ClipVision, gguf.Keys.ClipVision.Attention
    meta: dict[str, Any] = {
        gguf.Keys.General.TYPE: gguf.GGUFType.MMPROJ,
        gguf.Keys.General.NAME: name,
        gguf.Keys.General.FILE_TYPE: int(FILE_TYPES[gtype]),
        gguf.Keys.Clip.HAS_VISION_ENCODER: True,
        gguf.Keys.Clip.PROJECTOR_TYPE: PROJECTOR_MLP,
        cv.PROJECTION_DIM: hp["n_embd_text"],
        cv.IMAGE_SIZE: hp["image_size"],
        cv.PATCH_SIZE: hp["patch_size"],
        cv.EMBEDDING_LENGTH: hp["n_embd"],
        cv.FEED_FORWARD_LENGTH: hp["n_ff"],
        cv.BLOCK_COUNT: hp["block_count"],
        ln.HEAD_COUNT: hp["n_head"],
        ln.LAYERNORM_EPS: float(hp["eps"]),
        cv.IMAGE_MEAN: hp["image_mean"],
        cv.IMAGE_STD: hp["image_std"],
        KEY_FEATURE_LAYERS: hp["feature_layers"],
        KEY_LLAMACPP_ROWS: hp["llamacpp_rows"],
        KEY_HF_ROWS: hp["hf_rows"],
    }
    if hp["tower_act"] == "gelu":
        meta[cv.USE_GELU] = True
    elif hp["tower_act"] == "silu":
        meta[cv.USE_SILU] = True
    if hp["has_cls"]:
        meta[KEY_POSITION_ORDER] = "patches,cls"
    if hp["image_processor"]:   # vlmkit's runtime resizes / crops / pads as the processor does (vlmkit.llamacpp.mtmd)
        meta[KEY_IMAGE_PROCESSOR] = hp["image_processor"]
    return meta


# --- tensors -----------------------------------------------------------------------------------------

def plan_tensors(model_dir: Path, hp: dict[str, Any], source, want: GT) -> tuple[list[_Tensor], dict[str, str]]:
    """Every vision / projector tensor of ``source`` mapped to its mmproj tensor or dropped with a reason;
    an unknown one stops the conversion. Language-model tensors are not looked at (model.gguf's job)."""
    tensors: list[_Tensor] = []
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    for name in source.names():
        part, rel = _split(name, hp["map"])
        if part is None:
            continue
        reason = _drop_reason(part, rel, hp)
        if reason:
            dropped[name] = reason
            continue
        gguf_name = _gguf_name(part, rel, hp)
        if gguf_name is None:
            unmapped.append(name)
            continue
        tensors.append(_tensor(source, name, gguf_name, hp, want))
    if unmapped:
        raise VlmkitError(model_dir, f"mmproj: {len(unmapped)} vision tensor(s) have no mapping: "
                                     + ", ".join(unmapped[:8]))
    tensors += _zero_projector_biases(tensors, hp)
    _check_complete(model_dir, tensors, hp)
    return tensors, dropped


def _split(name: str, maps: MmprojMap) -> tuple[str | None, str]:
    for part, prefixes in (("tower", maps.tower_prefixes), ("projector", maps.projector_prefixes)):
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix:
            return part, name[len(prefix):]
    return None, name


def _drop_reason(part: str, rel: str, hp: dict[str, Any]) -> str | None:
    if part != "tower":
        return None
    for pattern, reason in hp["map"].tower_drop.items():
        if re.search(pattern, rel):
            return reason
    layer = re.match(hp["map"].layer, rel)
    if layer and int(layer["bid"]) >= hp["block_count"]:
        return (f"after the deepest feature layer (hidden_states[{hp['block_count']}]): "
                "LLaVA never uses its output")
    return None


def _gguf_name(part: str, rel: str, hp: dict[str, Any]) -> str | None:
    if part == "projector":
        for pattern, bid in hp["map"].projector:
            if m := re.match(pattern, rel):
                return f"{gguf.TENSOR_NAMES[T.V_MMPROJ].format(bid=bid)}.{m['kind']}"
        return None
    for pattern, tensor_name in hp["map"].tower:
        if m := re.match(pattern, rel):
            groups = m.groupdict()
            tensor = _ffn_swap(T[tensor_name], hp)
            base = gguf.TENSOR_NAMES[tensor].format(bid=groups.get("bid"))
            return f"{base}.{groups['kind']}" if groups.get("kind") else base
    return None


def _ffn_swap(tensor: T, hp: dict[str, Any]) -> T:
    """mtmd swaps up/down back when ffn_down's input dim equals n_embd (always, if n_ff == n_embd)."""
    if hp["n_ff"] != hp["n_embd"]:
        return tensor
    return {T.V_ENC_FFN_UP: T.V_ENC_FFN_DOWN, T.V_ENC_FFN_DOWN: T.V_ENC_FFN_UP}.get(tensor, tensor)


def _out_type(gguf_name: str, shape: tuple[int, ...], want: GT, source_dtype: str) -> GT:
    """Like llama.cpp's converter: matmul weights take the requested type (a quantized type only where
    the block divides the rows, else ``QUANT_FALLBACK``); norms, biases, class and position embeddings
    stay f32. The patch kernel stays bf16 when it is bf16 (ggml's conv then runs in f32, see the module
    docstring), else f16 only for f16 output."""
    if gguf_name == "v.patch_embd.weight":
        return GT.BF16 if source_dtype == "BF16" else GT.F16 if want == GT.F16 else GT.F32
    if len(shape) == 2 and gguf_name.endswith(".weight") and not gguf_name.startswith("v.position_embd"):
        return want if shape[-1] % ggml_block(want) == 0 else QUANT_FALLBACK
    return GT.F32


def kept_at_float(tensors: list[_Tensor], want: GT) -> dict[str, str]:
    """For a quantized mmproj: each tensor written at another type -> "TYPE: why" (empty for float files)."""
    if ggml_block(want) == 1:
        return {}
    block = ggml_block(want)
    kept = {}
    for t in tensors:
        if t.gtype == want:
            continue
        if t.name == "v.patch_embd.weight":
            why = "patch-embedding conv kernel (llama.cpp's converter keeps it float; ggml's conv runs in its type)"
        elif t.gtype == QUANT_FALLBACK:
            why = (f"{t.shape[-1]} inputs per row: not whole {block}-wide {want.name} blocks "
                   "(llama.cpp's converter falls back to F16 the same way)")
        else:
            why = "norm, bias, class or position embedding (llama.cpp keeps these F32)"
        kept[t.name] = f"{t.gtype.name}: {why}"
    return kept


def _tensor(source, name: str, gguf_name: str, hp: dict[str, Any], want: GT) -> _Tensor:
    shape = tuple(source.infos[name].shape)
    produce = lambda: source.read(name)  # noqa: E731  (cast to the output type a block of rows at a time)
    if gguf_name.startswith("v.position_embd") and hp["has_cls"]:
        produce = _cls_last(produce)
    gtype = _out_type(gguf_name, shape, want, source.infos[name].dtype)
    return _Tensor(gguf_name, shape, gtype, produce, name)


def _cls_last(produce: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """transformers' table is [CLS, patch 0 ..]; this llama.cpp's llava graph lays tokens out as
    [patch 0 .., CLS] and adds rows 0..N in order (issue #25814), so the CLS row moves to the end."""
    def reordered() -> np.ndarray:
        table = produce()
        return np.concatenate([table[1:], table[:1]])
    return reordered


def _zero_projector_biases(tensors: list[_Tensor], hp: dict[str, Any]) -> list[_Tensor]:
    """``multimodal_projector_bias=False``: the llava graph adds mm.0 / mm.2 biases unconditionally."""
    have = {t.name for t in tensors}
    width = hp["n_embd_text"]
    return [_Tensor(f"mm.{bid}.bias", (width,), GT.F32, lambda: np.zeros(width, np.float32), "(zeros)")
            for bid in (0, 2) if f"mm.{bid}.bias" not in have]


def _check_complete(model_dir: Path, tensors: list[_Tensor], hp: dict[str, Any]) -> None:
    have = {t.name for t in tensors}
    need = ["v.patch_embd.weight", "v.position_embd.weight", "mm.0.weight", "mm.2.weight"]
    need += [f"v.blk.{i}.attn_out.weight" for i in range(hp["block_count"])]
    if hp["has_cls"]:
        need.append("v.class_embd")
    missing = [n for n in need if n not in have]
    if missing:
        raise CheckpointError(model_dir, f"mmproj: checkpoint lacks tensors for {', '.join(missing[:6])}")
    positions = next(t for t in tensors if t.name == "v.position_embd.weight").shape[0]
    expected = (hp["image_size"] // hp["patch_size"]) ** 2 + hp["has_cls"]
    if positions != expected:
        raise CheckpointError(model_dir, f"mmproj: {positions} position embeddings, expected {expected} "
                                         f"for image_size {hp['image_size']} / patch_size {hp['patch_size']}")


# --- writing -----------------------------------------------------------------------------------------

def _write_atomic(out_path: Path, metadata: dict[str, Any], tensors: list[_Tensor]) -> None:
    """Temp file in the destination directory, then ``os.replace``: a failure leaves nothing behind."""
    from vlmkit.gguf.writer import LazyTensor, write_gguf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    lazy = [LazyTensor(t.name, t.shape, t.gtype, _nbytes(t), _writer(t), source=t.source) for t in tensors]
    try:
        write_gguf(Path(tmp), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ], _kv_adder(metadata), lazy)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)    # mkstemp's 0600 -> what a plain open() would have made
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nbytes(t: _Tensor) -> int:
    return ggml_nbytes(t.gtype, int(np.prod(t.shape, dtype=np.int64)))


def _writer(t: _Tensor) -> Callable:
    def write(fout) -> None:
        from vlmkit.gguf.lm import write_cast

        data = t.produce()
        if data.shape != t.shape:
            raise CheckpointError(None, f"{t.source}: shape {data.shape}, header says {t.shape}")
        write_cast(data, t.gtype, fout)
    return write


def _kv_adder(metadata: dict[str, Any]) -> Callable[[gguf.GGUFWriter], None]:
    def add(writer: gguf.GGUFWriter) -> None:
        for key, value in metadata.items():
            if isinstance(value, bool):
                writer.add_bool(key, value)
            elif isinstance(value, str):
                writer.add_string(key, value)
            elif isinstance(value, float):
                writer.add_float32(key, value)
            elif isinstance(value, int):
                writer.add_uint32(key, value)
            elif value and isinstance(value[0], int):   # clip.cpp reads index arrays as INT32
                writer.add_array(key, [int(v) for v in value])
            else:
                writer.add_array(key, [float(v) for v in value])
    return add
