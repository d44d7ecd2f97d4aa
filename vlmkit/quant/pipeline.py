"""``quantize(model, method=..., bits=..., ...)``: calibrate, quantize block by block, report, export.

Two held-out streams run next to the calibration stream, each block applied to them once at source
precision and once quantized, so the end-of-run mean KLD / same-top-1 against the original costs one extra
block forward, not a second model in memory.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.families import family_for, text_dir
from vlmkit.families.base import LANGUAGE_MODEL, Family
from vlmkit.memory import peak_rss_mb
from vlmkit.quant.blocks import Fold, LinearResult, apply_folds, quantize_block
from vlmkit.quant.calibration import Encoder, Sample, held_out_texts, load_samples
from vlmkit.quant.capture import BlockInput, StagedModel, run_block
from vlmkit.quant.recipe import QuantSpec, Recipe, decide
from vlmkit.quant.spill import SpilledPacked
from vlmkit.readers.model_files import read_config

FORMATS = ("hf", "gguf", "both")
EXACT_GGUF = {("q4_0", 4): 32, ("q8_0", 8): 32}  # GGUF type whose grid is symmetric groups of 32


@dataclass
class QuantizeResult:
    out: Path
    spec: dict[str, Any]
    quantized: dict[str, str]     # Linear -> why (and its fallback, if any)
    kept: dict[str, str]
    layers: list[dict[str, Any]]
    quality: dict[str, Any]
    timings: dict[str, float]
    # this process's peak resident set since it started, in MB (Linux VmHWM: vlmkit.memory.peak_rss_mb; not
    # ru_maxrss, which a process started by a large parent inherits); includes what the caller held before
    peak_rss_mb: float
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # held-out set -> [(model inputs, quantized logits)], with keep_logits=True (tests compare reloads to it)
    logits: dict[str, list[tuple[dict, torch.Tensor]]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("logits")
        out["out"] = str(self.out)
        return out


@dataclass
class BlockOutputs:
    """What the block loop leaves for the exports (all keyed by the checkpoint's tensor names)."""

    packed: SpilledPacked                                             # compressed-tensors form, on disk
    layers: list[tuple[int, list[LinearResult]]] = field(default_factory=list)
    replaced: dict[str, torch.Tensor] = field(default_factory=dict)   # other block tensors, AWQ folds applied
    folds: dict[int, list[Fold]] = field(default_factory=dict)        # block -> AWQ folds, in order
    importance: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict)  # weight -> (Σ x², tokens)


class FoldedWeights:
    """The float weight a quantized Linear was rounded from (the source weight with the AWQ folds replayed),
    read back from the checkpoint one block at a time: what llama.cpp's own quantizer starts from when the
    GGUF type's grid is not the method's."""

    def __init__(self, staged: StagedModel, folds: dict[int, list[Fold]]):
        self.staged, self.folds = staged, folds
        self.block_of = {disk: index for index in range(staged.n_blocks)
                         for disk in staged.block_tensor_names(index).values()}
        self._index, self._tensors = -1, {}

    def __call__(self, disk_name: str) -> torch.Tensor:
        index = self.block_of[disk_name]
        if index != self._index:
            block = self.staged.load_block(index)
            apply_folds(block, self.folds.get(index, []))
            names = self.staged.block_tensor_names(index)
            self._index, self._tensors = index, {names[rel]: t.detach().clone()  # the block is reloaded in place
                                                 for rel, t in block.state_dict().items()}
        return self._tensors[disk_name]


@dataclass
class Stream:
    """A set of samples' model inputs and their hidden states at the current block."""

    inputs: list[dict[str, Any]]
    items: list[BlockInput]
    fp: list[torch.Tensor] = field(default_factory=list)   # source-precision hidden states (held-out only)


def validate_source(folder: Path) -> tuple[dict, Family]:
    """Everything quantize will read, checked through vlmkit's readers before transformers sees it: the
    config, the weights, the chat template (calibration renders it); a model type that only the checkpoint's
    own code defines is refused (a custom-code checkpoint of a known family, VILA, has its LM quantized)."""
    from vlmkit.readers import open_checkpoint
    from vlmkit.readers.model_files import check_chat_template

    if not folder.is_dir():
        open_checkpoint(folder).close()  # a malformed file is named for what is wrong with it first
        raise UnsupportedError(folder, "quantize takes a Hugging Face checkpoint directory (for a GGUF, convert "
                                       "its HF source with --dtype, or quantize that source)")
    config = read_config(folder) or {}
    open_checkpoint(folder).close()
    check_chat_template(folder)
    family, guessed = family_for(config)
    if guessed and config.get("auto_map"):
        raise UnsupportedError(folder / "config.json", f"model type {config.get('model_type')!r} is defined only by "
                                                       "the checkpoint's own code (auto_map), which vlmkit never runs")
    return config, family


def language_model_folder(folder: Path, family) -> tuple[Path, list[str]]:
    """The folder holding the language model transformers can build: the model itself, or for a custom-code
    checkpoint (VILA) the sub-folder its family declares (``text_subdir``, ``llm/``)."""
    if not family.custom_code:
        return folder, []
    sub = text_dir(folder, family)
    if sub == folder or not (sub / "config.json").is_file():
        raise UnsupportedError(folder, "custom-code checkpoint without a language-model sub-folder vlmkit can build")
    return sub, [(f"custom-code checkpoint: its language model ({sub.name}/) is quantized and the other "
                  "parts copied unchanged; calibration uses the question texts (vlmkit never runs the "
                  "checkpoint's own vision code)")]


def build_recipe(staged: StagedModel, spec: QuantSpec) -> tuple[Recipe, list[str]]:
    """Decisions for every Linear; returns the recipe and the block-relative names to quantize."""
    recipe = Recipe()
    block_prefix = f"{staged.blocks_name}.0."
    for name, module in staged.model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith(block_prefix):
            component = staged.family.component_of(staged.disk_name(name + ".weight") or name + ".")
            recipe.decisions[name] = decide(name, module.in_features, False, component, spec)
    rels = []
    for rel, module in staged.template.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for index in range(staged.n_blocks):
            name = f"{staged.blocks_name}.{index}.{rel}"
            recipe.decisions[name] = decide(name, module.in_features, True, LANGUAGE_MODEL, spec)
        if recipe.decisions[f"{staged.blocks_name}.0.{rel}"].quantize:
            rels.append(rel)
    return recipe, rels


def quantize(model: str | os.PathLike, out: str | os.PathLike, method: str = "gptq", bits: int = 4,
             group_size: int = 128, symmetric: bool = True, calib: str = "demo", samples: int = 64,
             format: str = "hf", gguf_type: str | None = None, include: tuple[str, ...] = (),
             exclude: tuple[str, ...] = (), act_order: bool = False, held_out: int = 16,
             overwrite: bool = False, progress: bool = True, verbose: bool = False, awq_clip: bool = False,
             keep_logits: bool = False, threads: int | None = None, scale_search: bool = True) -> QuantizeResult:
    """Quantize MODEL's language-model Linears and export to ``out`` (compressed-tensors and/or GGUF)."""
    from vlmkit.export.atomic import faults_in_one_line

    with faults_in_one_line(Path(out)), ExitStack() as scratch:  # SIGINT / SIGTERM: one line, nothing left
        if threads:
            torch.set_num_threads(threads)
        from vlmkit.export.atomic import atomic_dir, scratch_dir
        from vlmkit.hub import resolve_model
        from vlmkit.logs import quiet_transformers
        from vlmkit.readers import open_checkpoint
        from vlmkit.runtime.transformers_backend import model_class

        quiet_transformers(verbose)
        if format not in FORMATS:
            raise VlmkitError(None, f"--format {format}: choose one of {', '.join(FORMATS)}")
        gguf_type = gguf_type or ("q8_0" if bits == 8 else "q4_0")
        exact_group = EXACT_GGUF.get((gguf_type, bits)) if format != "hf" else None
        if exact_group and not symmetric:
            exact_group = None
        spec = QuantSpec(method, bits, group_size, symmetric, act_order, awq_clip=awq_clip, include=tuple(include),
                         exclude=tuple(exclude), scale_search=scale_search)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        folder = resolve_model(model)
        _, family = validate_source(folder)
        lm_folder, notes = language_model_folder(folder, family)
        notes += _asymmetric_notes(spec, format, gguf_type)
        lm_config = read_config(lm_folder) or {}
        checkpoint = open_checkpoint(lm_folder)
        lm_family, _ = family_for(lm_config, list(checkpoint.infos))
        auto_class, is_vlm = model_class(lm_folder)
        staged = StagedModel(lm_folder, checkpoint, lm_family, auto_class)
        recipe, rels = build_recipe(staged, spec)
        if not rels:
            raise VlmkitError(folder, "nothing to quantize (every Linear is kept; check --include/--exclude)")
        group_of = {rel: recipe.decisions[f"{staged.blocks_name}.0.{rel}"].group_size for rel in rels}
        scale_grid = _scale_grid(checkpoint, staged, rels, exact_group, spec, notes)
        timings["load_s"] = time.perf_counter() - start

        t = time.perf_counter()
        calibration, held = load_samples(calib, samples, held_out)
        encode = Encoder(lm_folder, images=is_vlm)
        calib_stream = _stream(staged, encode, calibration)
        held_streams = {"held-out " + ("image questions" if is_vlm and any(s.image for s in held) else "texts"):
                        _stream(staged, encode, held, fp=True)} if held else {}
        held_streams["held-out plain text"] = _stream(staged, encode, held_out_texts(), fp=True)
        timings["capture_s"] = time.perf_counter() - t

        t = time.perf_counter()
        spill = SpilledPacked(scratch.enter_context(scratch_dir(Path(out))))
        blocks = _run_blocks(staged, rels, group_of, spec, scale_grid, calib_stream, held_streams, spill, progress)
        timings["quantize_s"] = time.perf_counter() - t
        t = time.perf_counter()
        quality, logits = {}, {}
        for name, stream in held_streams.items():
            quality[name], logits[name] = _stats(staged, stream)
        timings["report_s"] = time.perf_counter() - t

        t = time.perf_counter()
        result = QuantizeResult(Path(out), _spec_dict(spec, scale_grid), recipe.quantized, recipe.kept,
                                [_layer_dict(staged, i, r) for i, rs in blocks.layers for r in rs], quality, timings, 0.0,
                                notes=notes, logits=logits if keep_logits else {})
        with atomic_dir(Path(out), overwrite) as tmp:
            _export(tmp, folder, lm_folder, staged, recipe, spec, blocks, format, gguf_type, exact_group, calib,
                    calibration, calib_stream, result, verbose)
        timings["export_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - start
        result.peak_rss_mb = peak_rss_mb()
        return result


def _asymmetric_notes(spec: QuantSpec, format: str, gguf_type: str) -> list[str]:
    """What --asym means for each export, known before the run, kept in the notes."""
    from vlmkit.export.compressed_tensors import load_notes

    notes = load_notes(spec) if format != "gguf" else []
    if format != "hf" and not spec.symmetric and (gguf_type, spec.bits) in EXACT_GGUF:
        notes.append(f"GGUF {gguf_type}: ggml's blocks are symmetric (no zero point), so the --asym integers "
                     "cannot be written into them exactly")
    return notes


def _scale_grid(checkpoint, staged: StagedModel, rels: list[str], exact_group: int | None, spec: QuantSpec,
                notes: list[str]) -> torch.dtype | None:
    """Scales are rounded to the type they are stored in: float16 for GGUF's Q4_0 / Q8_0 blocks, else the
    checkpoint's weight dtype (bf16 / f16 checkpoints), none for float32."""
    if exact_group is not None:
        if spec.group_size != exact_group:
            notes.append(f"GGUF {exact_group}-wide blocks differ from --group-size {spec.group_size}: the GGUF "
                         "is requantized by llama.cpp from the dequantized weights, not written exactly")
            return None
        return torch.float16
    disk = staged.block_tensor_names(0)[rels[0] + ".weight"]
    return {"BF16": torch.bfloat16, "F16": torch.float16}.get(checkpoint.infos[disk].dtype)


def _stream(staged: StagedModel, encode: Encoder, samples: list[Sample], fp: bool = False) -> Stream:
    inputs = [encode(sample) for sample in samples]
    items = [staged.capture(x) for x in inputs]
    return Stream(inputs, items, [item.hidden for item in items] if fp else [])


def _run_blocks(staged, rels, group_of, spec, scale_grid, calib: Stream, held: dict[str, Stream],
                spill: SpilledPacked, progress: bool):
    from tqdm import tqdm

    out = BlockOutputs(packed=spill)
    for index in tqdm(range(staged.n_blocks), desc=f"{spec.method} W{spec.bits}", unit="block",
                      disable=not progress, leave=False):
        block = staged.load_block(index)
        for stream in held.values():  # source-precision path first, on the unmodified block
            stream.fp = [run_block(block, item, h) for item, h in zip(stream.items, stream.fp)]
        done = quantize_block(block, rels, group_of, spec, calib.items, scale_grid)
        for stream in (calib, *held.values()):
            for item in stream.items:
                item.hidden = run_block(block, item)
        names = staged.block_tensor_names(index)
        quantized = {r.name + ".weight" for r in done.linears}
        for rel, tensor in block.state_dict().items():
            if rel not in quantized:
                out.replaced[names[rel]] = tensor.detach().clone()
        packed = {}
        for r in done.linears:
            disk = names[r.name + ".weight"]
            packed[disk] = _pack(r, block, scale_grid, staged.checkpoint.infos[disk].dtype)
            out.importance[disk] = (r.input_sq_sum, r.tokens)
            r.input_sq_sum = None  # held once, in out.importance
            # packed above: the float32 dequantized copy, kept to the end, was 4 bytes a weight (3.5 GB at 1 B)
            r.quantized = replace(r.quantized, weight=None)
        out.packed.add_block(index, packed)
        out.layers.append((index, done.linears))
        out.folds[index] = done.folds
        del block, done, packed
        _return_freed_memory()
    return out


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system after each block (glibc's ``malloc_trim``): a block's
    tensors of a few MB to a few hundred are freed into the heap, which otherwise keeps growing by ~8 MB a
    block at 1 B. Nothing happens where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _pack(result: LinearResult, block, scale_grid, source_dtype: str) -> dict[str, torch.Tensor]:
    """The Linear as compressed-tensors' pack-quantized compressor writes it."""
    from compressed_tensors.compressors import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme

    q = result.quantized
    store = {"BF16": torch.bfloat16, "F16": torch.float16}.get(source_dtype, torch.float32)
    if scale_grid is not None and scale_grid != store:
        store = torch.float32
    scheme = QuantizationScheme(targets=["Linear"], weights=q.args)
    state = {"weight": q.weight, "weight_scale": q.scale.to(store), "weight_zero_point": q.zero_point}
    return PackedQuantizationCompressor.compress(state, scheme)


def _stats(staged: StagedModel, stream: Stream) -> tuple[dict[str, Any], list[tuple[dict, torch.Tensor]]]:
    """Mean KLD / same top-1 ... of the quantized model against the source on one held-out set, over every
    position and at each prompt's last position alone: where a question's answer is decided, one position in
    ~30, which the all-position mean can hide (on the demo AWQ's is 23 % below RTN's over all positions and no
    lower at the last)."""
    import numpy as np

    from vlmkit.metrics.logits import logit_stats

    ref = [staged.logits(x, h) for x, h in zip(stream.inputs, stream.fp)]
    cand = [staged.logits(x, item.hidden) for x, item in zip(stream.inputs, stream.items)]
    stats = logit_stats(np.concatenate([r.numpy() for r in ref]), np.concatenate([c.numpy() for c in cand]))
    last = logit_stats(np.stack([r[-1].numpy() for r in ref]), np.stack([c[-1].numpy() for c in cand]))
    return {**stats.as_dict(), "last_position_mean_kld": last.mean_kld, "last_position_same_top1": last.same_top1,
            "n_samples": len(stream.inputs)}, list(zip(stream.inputs, cand))


def _mean_tokens(stream: Stream) -> int:
    return round(sum(item.hidden.shape[-2] for item in stream.items) / max(len(stream.items), 1))


def _spec_dict(spec: QuantSpec, scale_grid) -> dict[str, Any]:
    out = asdict(spec)
    out["scheme"] = spec.scheme
    out["scale_grid"] = str(scale_grid).replace("torch.", "") if scale_grid is not None else None
    return out


def _layer_dict(staged: StagedModel, index: int, result: LinearResult) -> dict[str, Any]:
    q = result.quantized
    return {"name": f"{staged.blocks_name}.{index}.{result.name}", "block": index, "linear": result.name,
            "group_size": q.args.group_size or 0, "relative_error": result.relative_error, "awq": result.awq}


def _export(tmp: Path, folder: Path, lm_folder: Path, staged, recipe, spec, blocks: BlockOutputs, format: str,
            gguf_type: str, exact_group, calib: str, calibration: list[Sample], calib_stream: Stream,
            result: QuantizeResult, verbose: bool) -> None:
    from vlmkit.export.compressed_tensors import write_compressed_tensors
    from vlmkit.quant.calibration import write_fingerprints
    from vlmkit.quant.record import write_record

    hf_dir = tmp if format != "gguf" else tmp / ".hf"
    write_compressed_tensors(hf_dir, folder, lm_folder, staged, recipe, spec, blocks.packed, blocks.replaced)
    if format != "hf":
        from vlmkit.export.gguf_quant import Regrid, write_quantized_gguf

        gguf_dir = tmp if format == "gguf" else tmp / "gguf"
        exact = exact_group is not None and result.spec["scale_grid"] == "float16"
        regrid = None if exact else Regrid(FoldedWeights(staged, blocks.folds), blocks.importance, spec.method,
                                           calib, len(calibration), _mean_tokens(calib_stream))
        result.notes += write_quantized_gguf(gguf_dir, hf_dir, lm_folder.relative_to(folder), blocks.packed,
                                             gguf_type, regrid, verbose)
        if format == "gguf":
            import shutil

            shutil.rmtree(hf_dir)
    for model_dir in (tmp, tmp / "gguf") if format == "both" else (tmp,):
        write_fingerprints(model_dir, calib, calibration)
        write_record(model_dir, str(folder), result.spec, result.layers, result.quality, result.notes)
    result.files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
