"""``convert(model, out_dir, to="gguf", dtype=...)``: HF checkpoint -> llama.cpp GGUF (+ mmproj for VLMs).

Outputs are ``out_dir/model.gguf`` and, for a LLaVA-style VLM, ``out_dir/mmproj.gguf``. The checkpoint
is opened (and validated) through ``vlmkit.readers`` before anything is written; everything is written
into a staging directory next to ``out_dir`` and renamed into place at the end (``vlmkit.export.atomic``),
so a failure, Ctrl-C, SIGTERM or a full disk leaves nothing behind. Quantized types go through llama.cpp's
own quantizer.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmkit.constants import FLOAT_TYPES, OUTPUT_TYPES, output_type
from vlmkit.errors import UnsupportedError, VlmkitError

if TYPE_CHECKING:
    from vlmkit.readers import Checkpoint

DTYPES = tuple(OUTPUT_TYPES)
MODEL_FILE = "model.gguf"
MMPROJ_FILE = "mmproj.gguf"
_NOT_EXPORTED = "vision tower / projector: not exported (no mmproj.gguf, see the note below)"


@dataclass
class ConvertResult:
    model_path: Path
    mmproj_path: Path | None
    dtype: str
    arch: str
    family: str
    n_tensors: int
    dropped: dict[str, str]
    tokenizer: str
    seconds: float
    mmproj_dtype: str | None = None         # the mmproj's matmul-weight type
    mmproj_kept: dict[str, str] = field(default_factory=dict)   # quantized mmproj: tensor -> "TYPE: why"
    verify: Any = None                      # vlmkit.eval.verify.VerifyReport
    verify_error: str | None = None         # a check that could not run: which, and why (output kept)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path), "mmproj": str(self.mmproj_path) if self.mmproj_path else None,
            "dtype": self.dtype, "arch": self.arch, "family": self.family, "n_tensors": self.n_tensors,
            "dropped": self.dropped, "tokenizer": self.tokenizer, "seconds": round(self.seconds, 3),
            "verify": self.verify.as_dict() if self.verify is not None else None,
            "verify_error": self.verify_error, "notes": self.notes,
            "mmproj_dtype": self.mmproj_dtype if self.mmproj_path else None, "mmproj_kept": self.mmproj_kept,
        }


@dataclass(frozen=True)
class ConvertOptions:
    dtype: str = "f16"
    verify: bool | None = None
    mmproj: bool = True
    threads: int | None = None
    verbose: bool = False
    overwrite: bool = False
    config: str | None = None          # big_vision -> hf: a config.json or a preset name
    tokenizer: str | None = None       # big_vision -> hf: tokenizer.model for the processor files
    imatrix: str | None = None         # hf -> gguf, quantized types: llama.cpp importance-matrix file
    mmproj_dtype: str | None = None    # hf -> gguf, VLMs: mmproj.gguf's type (None: mmproj_dtype's default)


def convert(model: str | os.PathLike, out_dir: str | os.PathLike, to: str | None = None, dtype: str = "f16",
            verify: bool | None = None, *, mmproj: bool = True, threads: int | None = None,
            verbose: bool = False, overwrite: bool = False, config: str | None = None,
            tokenizer: str | None = None, download: bool = False, imatrix: str | os.PathLike | None = None,
            mmproj_dtype: str | None = None) -> Any:
    """Convert ``model`` (path, hub id, ``zoo:<name>``, ``demo``) to ``to`` in ``out_dir``.

    The route is chosen by (source format, target) in ``ROUTES`` (``to=None``: ``DEFAULT_TARGET``): HF -> GGUF (``verify=None`` runs the
    transformers-vs-llama.cpp parity report when both are installed), big_vision npz -> HF, HF -> big_vision.
    ``imatrix``: an importance matrix (``llama-imatrix``'s GGUF or legacy .dat, or ``vlmkit quantize``'s
    ``imatrix.gguf``) for llama.cpp's quantizer, as ``llama-quantize --imatrix`` takes it.
    ``mmproj_dtype``: f16 | q8_0 | f32 | bf16 for a VLM's mmproj.gguf (default: the LM's float type, f16 for
    a quantized LM; see ``vlmkit.gguf.mmproj``).
    """
    from vlmkit.hub import resolve_model
    from vlmkit.readers import open_checkpoint

    path = resolve_model(model, download=download)
    with open_checkpoint(path) as checkpoint:     # validated once, here, before anything is written
        source = source_format(checkpoint)
        to = to or DEFAULT_TARGET.get(source, "gguf")
        route = ROUTES.get((source, to))
        if route is None:
            known = ", ".join(f"{s} -> {t}" for s, t in ROUTES)
            raise UnsupportedError(path, f"--to {to} from a {source} checkpoint is not supported ({known})")
        if mmproj_dtype is not None and route is not _to_gguf:
            raise UnsupportedError(path, f"--mmproj-dtype is for --to gguf, not --to {to}")
        options = ConvertOptions(dtype, verify, mmproj, threads, verbose, overwrite, config, tokenizer,
                                 str(imatrix) if imatrix is not None else None, mmproj_dtype)
        return route(path, checkpoint, Path(out_dir), options)


def source_format(checkpoint: Checkpoint) -> str:
    """``hf``, ``big_vision`` or ``gguf``, from the checkpoint's format."""
    return {"npz": "big_vision", "gguf": "gguf"}.get(checkpoint.format, "hf")


def _to_big_vision(path: Path, checkpoint: Checkpoint, out: Path, options: ConvertOptions):
    from vlmkit.export.big_vision import hf_to_big_vision

    return hf_to_big_vision(checkpoint, _read_config(path), out, overwrite=options.overwrite,
                            progress=sys.stderr.isatty())


def _from_big_vision(path: Path, checkpoint: Checkpoint, out: Path, options: ConvertOptions):
    from vlmkit.export.big_vision import big_vision_to_hf

    return big_vision_to_hf(checkpoint, out, config=options.config, tokenizer=options.tokenizer,
                            overwrite=options.overwrite, progress=sys.stderr.isatty())


def _to_gguf(model_dir: Path, source: Checkpoint, out_dir: Path, options: ConvertOptions) -> ConvertResult:
    dtype, verify, mmproj, threads = output_type(options.dtype).name, options.verify, options.mmproj, options.threads
    verbose, overwrite = options.verbose, options.overwrite
    from vlmkit.export.atomic import atomic_dir
    from vlmkit.readers.model_files import check_chat_template

    config = _read_config(model_dir)
    check_chat_template(model_dir)
    imatrix = _read_imatrix(options.imatrix, dtype)
    mmproj_type = _mmproj_type(dtype, options.mmproj_dtype)
    with atomic_dir(out_dir, overwrite, what="(model.gguf and mmproj.gguf go inside)",
                    replaceable_suffixes=(".gguf",)) as tmp:
        result = _convert_into(model_dir, config, source, tmp, dtype, mmproj, threads, verbose, imatrix, mmproj_type)
        if verify or (verify is None and _runtimes_available()):
            _run_verification(model_dir, tmp, result, threads, verbose, asked=bool(verify))
            if result.verify_error:  # name the files where they will be, not the temporary directory
                result.verify_error = result.verify_error.replace(str(tmp), str(out_dir))
    result.model_path = out_dir / MODEL_FILE
    result.mmproj_path = out_dir / MMPROJ_FILE if result.mmproj_path else None
    return result


def _to_hf(path: Path, checkpoint: Checkpoint, out: Path, options: ConvertOptions):
    from vlmkit.export.hf import convert_to_hf

    if options.dtype != ConvertOptions.dtype:
        raise UnsupportedError(path, "--to hf keeps every tensor's dtype (to change them: vlmkit quantize)")
    return convert_to_hf(path, checkpoint, out, overwrite=options.overwrite)


# (source format, --to) -> the function that does it
ROUTES = {
    ("hf", "gguf"): _to_gguf,
    ("hf", "hf"): _to_hf,    # tensor names every HF runtime loads (vLLM, transformers 4.x and 5)
    ("big_vision", "hf"): _from_big_vision,
    ("hf", "big_vision"): _to_big_vision,
}
DEFAULT_TARGET = {"hf": "gguf", "big_vision": "hf"}   # --to when not given


def _read_imatrix(path: str | None, dtype: str):
    if path is None:
        return None
    if dtype in FLOAT_TYPES:
        raise VlmkitError(path, f"an importance matrix is for quantized types; --dtype {dtype} is a float type")
    from vlmkit.quant.imatrix import read_imatrix

    return Path(path), read_imatrix(Path(path))


def _check_imatrix_names(path: Path, matrix, float_gguf: Path) -> None:
    """An importance matrix made for another model names none of this one's tensors: refuse, as llama.cpp
    would otherwise quietly quantize without it."""
    import gguf

    names = {t.name for t in gguf.GGUFReader(float_gguf).tensors}
    if not names & set(matrix.values):
        raise VlmkitError(path, f"none of its {len(matrix.values)} entries names a tensor of this model "
                                f"(e.g. {next(iter(matrix.values))!r}; made for another model?)")


def _convert_into(model_dir: Path, config: dict, source: Checkpoint, tmp: Path, dtype: str, mmproj: bool,
                  threads: int | None, verbose: bool, imatrix=None, mmproj_type: str | None = None) -> ConvertResult:
    from vlmkit.gguf.export import lossless_float, write_lm_gguf
    from vlmkit.gguf.lm import MMPROJ_REASON

    start = time.perf_counter()
    float_type = dtype if dtype in FLOAT_TYPES else lossless_float(source)
    float_path = tmp / (MODEL_FILE if float_type == dtype else f"model-{float_type}.gguf")
    conversion_id = uuid.uuid4().hex
    lm = write_lm_gguf(model_dir, config, float_path, float_type, source, conversion_id)
    if float_path.name != MODEL_FILE:
        from vlmkit.llamacpp.quantize import quantize

        if imatrix is None:
            quantize(float_path, tmp / MODEL_FILE, dtype, threads, verbose)
        else:
            path, matrix = imatrix
            _check_imatrix_names(path, matrix, float_path)
            quantize(float_path, tmp / MODEL_FILE, dtype, threads, verbose, matrix.values,
                     matrix.metadata(Path(path.name)))
        float_path.unlink()
    result = ConvertResult(tmp / MODEL_FILE, None, dtype, lm.arch, lm.family, lm.n_tensors, lm.dropped,
                           lm.vocab.how if lm.vocab else "", 0.0)
    if mmproj and any(r.startswith("vision tower") for r in lm.dropped.values()):
        mmproj_type = mmproj_type or _mmproj_type(dtype, None)
        result.mmproj_path = _write_mmproj(model_dir, config, source, tmp, mmproj_type, result, conversion_id)
    if result.mmproj_path is None:  # the LM plan expected an mmproj; say what really happened to the tower
        result.dropped = {name: _NOT_EXPORTED if reason == MMPROJ_REASON else reason
                          for name, reason in result.dropped.items()}
    result.seconds = time.perf_counter() - start
    return result


def _mmproj_type(dtype: str, asked: str | None) -> str:
    """The mmproj's type, checked before anything is written (a bad --mmproj-dtype is a one-line error)."""
    from vlmkit.gguf.mmproj import mmproj_dtype

    return mmproj_dtype(dtype, asked)


def _write_mmproj(model_dir: Path, config: dict, source, tmp: Path, dtype: str, result: ConvertResult,
                  conversion_id: str):
    """``dtype``: the mmproj's own type (``_mmproj_type``)."""
    try:
        from vlmkit.gguf import mmproj
    except ImportError:
        result.notes.append("mmproj.gguf not written: vlmkit.gguf.mmproj is not available")
        return None
    if hasattr(mmproj, "is_llava_vision") and not mmproj.is_llava_vision(config):
        result.notes.append("mmproj.gguf not written: this vision tower has no mmproj export yet")
        return None
    try:
        written = mmproj.write_mmproj(model_dir, config, source, tmp / MMPROJ_FILE, dtype, conversion_id)
    except UnsupportedError as error:  # the language model is still useful on its own: say so, loudly
        result.notes.append(f"WARNING: mmproj.gguf not written: {error.reason}")
        return None
    result.notes.extend(getattr(written, "approximations", []))
    result.mmproj_dtype, result.mmproj_kept = dtype, written.kept
    return tmp / MMPROJ_FILE


def _read_config(model_dir: Path) -> dict:
    from vlmkit.readers.model_files import read_config

    config = read_config(model_dir) if model_dir.is_dir() else None
    if config is None:
        raise VlmkitError(model_dir, "no config.json: not a Hugging Face model directory")
    return config


def _runtimes_available() -> bool:
    from vlmkit.llamacpp.loading import available

    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return available()


class _CheckFailed(Exception):
    def __init__(self, check: str, error: BaseException):
        super().__init__(check)
        self.check, self.error = check, error


def _run_verification(model_dir: Path, tmp: Path, result: ConvertResult, threads: int | None, verbose: bool,
                      asked: bool) -> None:
    """The parity checks; one that cannot run never costs the user the (finished) conversion: its name
    and reason go to ``result.verify_error`` and the output is still published."""
    from vlmkit.readers.base import one_line

    try:
        result.verify = _verify(model_dir, tmp, result, threads, verbose)
    except _CheckFailed as failed:
        error = failed.error
        if isinstance(error, UnsupportedError) and not asked:  # not asked for: convert anyway, say why
            result.notes.append(f"parity check skipped: {error.reason}")
            return
        if verbose:
            import traceback

            traceback.print_exception(error)
        reason = error.reason if isinstance(error, VlmkitError) else f"{error.__class__.__name__}: {one_line(error)}"
        result.verify_error = f"{failed.check} could not run: {reason}"


@contextlib.contextmanager
def _check(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:  # noqa: BLE001 - any failure of a check is reported, the output kept
        raise _CheckFailed(name, error) from error


def _verify(model_dir: Path, tmp: Path, result: ConvertResult, threads: int | None, verbose: bool):
    from vlmkit.eval.reference import open_reference
    from vlmkit.eval.verify import reference_dir, verify_conversion

    parity = "the parity check (tokenizer, greedy tokens, logits; with an image for VLMs)"
    with _check(parity):   # a check the machine's memory cannot hold says so here, before anything loads
        reference = open_reference(reference_dir(model_dir), [tmp / MODEL_FILE, tmp / MMPROJ_FILE], threads, verbose)
    try:
        with _check(parity):
            report = verify_conversion(model_dir, tmp / MODEL_FILE, result.dtype, threads=threads, verbose=verbose,
                                       reference=reference)
        if result.mmproj_path is not None:
            with _check("the image-embedding check"):
                report.image = _verify_image(model_dir, tmp, verbose, reference.model)
    finally:
        reference.close()
    return report


def _verify_image(model_dir: Path, tmp: Path, verbose: bool, model: Any) -> dict | None:
    """Image-embedding parity (mtmd vs transformers, on the reference's own vision tower and projector)."""
    from vlmkit.eval.image_parity import verify_image_embeddings, verify_photo

    name, photo = verify_photo()
    return {"photo": name, **verify_image_embeddings(model_dir, tmp, photo, model=model, verbose=verbose)}
