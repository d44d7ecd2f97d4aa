"""The backends by name: how ``vlmkit run``, ``vlmkit eval`` and ``vlmkit.load`` open a model on one.

A backend plugs in with ``register(name, opener, accepts)``: ``opener(path, device, dtype, threads, verbose)``
returns a loaded ``Backend``; ``accepts(path)`` says whether ``--backend auto`` may pick it for those files
(first registered match wins, so the specific ones come first). Openers import their runtime lazily, so the
registry itself costs nothing at ``--help`` time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError, VlmkitError

Opener = Callable[[Path, str, "str | None", "int | None", bool], Any]


@dataclass(frozen=True)
class Entry:
    opener: Opener
    accepts: Callable[[Path], bool]
    validate: Callable[[Path], None]


BACKENDS: dict[str, Entry] = {}


def register(name: str, opener: Opener, accepts: Callable[[Path], bool],
             validate: Callable[[Path], None] | None = None) -> None:
    """``validate(path)`` reads the files through vlmkit's readers before the runtime sees them (default:
    the HF-directory checks)."""
    BACKENDS[name] = Entry(opener, accepts, validate or validate_hf)


def names() -> tuple[str, ...]:
    return ("auto", *BACKENDS)


def gguf_files(path: Path) -> tuple[Path, Path | None] | None:
    """(model.gguf, mmproj.gguf or None) when ``path`` is a GGUF file or a directory with one."""
    if path.is_file() and path.suffix == ".gguf":
        mmproj = path.with_name("mmproj.gguf")
        return path, (mmproj if mmproj.is_file() and mmproj != path else None)
    if path.is_dir():
        models = [p for p in sorted(path.glob("*.gguf")) if not p.name.startswith("mmproj")]
        chosen = path / "model.gguf" if (path / "model.gguf").is_file() else (models[0] if models else None)
        if chosen is not None:
            mmproj = path / "mmproj.gguf"
            return chosen, (mmproj if mmproj.is_file() else None)
    return None


def pick(path: Path, backend: str) -> str:
    """The backend to use for ``path``: ``backend`` checked against the files, or the first that accepts them."""
    if backend != "auto" and backend not in BACKENDS:
        raise VlmkitError(None, f"unknown backend {backend!r} (use {', '.join(names())})")
    if backend == "llamacpp" and gguf_files(path) is None:
        raise UnsupportedError(path, "the llama.cpp backend needs a GGUF file (run `vlmkit convert` first)")
    if backend in ("transformers", "vllm") and path.is_file() and path.suffix == ".gguf":
        raise UnsupportedError(path, f"the {backend} backend needs an HF model directory, not a GGUF file")
    if backend != "auto":
        return backend
    return next((name for name, entry in BACKENDS.items() if entry.accepts(path)), "transformers")


def open_backend(path: Path, backend: str, device: str = "auto", dtype: str | None = None,
                 threads: int | None = None, verbose: bool = False) -> Any:
    entry = BACKENDS[pick(path, backend)]
    entry.validate(path)
    return entry.opener(path, device, dtype, threads, verbose)


# Validators open every file the backend will read through vlmkit's readers first, so a malformed checkpoint
# (a tensor the index names but its shard lacks, a corrupt GGUF, a config.json that is not JSON, a chat
# template the sandbox refuses) is one line here, not a crash inside transformers or llama.cpp.

def validate_gguf(path: Path) -> None:
    """Every count, length and tensor of the GGUF files inside them (``gguf_layout.check_file``: a walk of
    the header, where gguf-py's reader would spend ~2 s on a 65k-token vocabulary). The chat template is
    checked in the sandbox by the backend, once llama.cpp has it (``LlamaCppBackend``)."""
    from vlmkit.readers.gguf_reader import check_gguf

    for file in filter(None, gguf_files(path) or ()):
        check_gguf(file)


def validate_hf(path: Path) -> None:
    from vlmkit.readers import open_checkpoint
    from vlmkit.readers.model_files import check_chat_template, read_config

    config = read_config(path) or {}
    open_checkpoint(path).close()
    check_chat_template(path)
    _refuse_custom_code(path, config)


def _refuse_custom_code(path: Path, config: dict[str, Any]) -> None:
    """A model type only the checkpoint's own code (``auto_map``) defines cannot run: that code is never
    imported."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if config.get("auto_map") and model_type not in CONFIG_MAPPING:
        raise UnsupportedError(path / "config.json", f"model type {model_type!r} is defined only by the "
                                                     "checkpoint's own code (auto_map), which vlmkit never runs")


def _llamacpp(path: Path, device: str, dtype: str | None, threads: int | None, verbose: bool) -> Any:
    from vlmkit.runtime.llamacpp_backend import LlamaCppBackend

    if dtype is not None:
        raise UnsupportedError(path, "--dtype applies to the transformers backend; a GGUF runs at the type "
                                     "it was converted to (vlmkit convert --dtype ...)")
    model, mmproj = gguf_files(path)  # type: ignore[misc]
    return LlamaCppBackend(model, mmproj, device=device, threads=threads, verbose=verbose)


def _transformers(path: Path, device: str, dtype: str | None, threads: int | None, verbose: bool) -> Any:
    from vlmkit.runtime.transformers_backend import TransformersBackend

    return TransformersBackend(path, device=device, dtype=dtype, threads=threads, verbose=verbose)


def _vllm(path: Path, device: str, dtype: str | None, threads: int | None, verbose: bool) -> Any:
    from vlmkit.runtime.vllm_backend import VllmBackend

    return VllmBackend(path, device=device, dtype=dtype, threads=threads, verbose=verbose)


def _is_gguf_only(path: Path) -> bool:
    return gguf_files(path) is not None and not (path.is_dir() and (path / "config.json").is_file())


register("llamacpp", _llamacpp, _is_gguf_only, validate_gguf)
register("transformers", _transformers, lambda path: path.is_dir() and (path / "config.json").is_file())
register("vllm", _vllm, lambda path: False)  # only when asked for (--backend vllm): an optional extra
