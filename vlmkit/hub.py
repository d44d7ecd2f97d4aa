"""Turn what the user typed as MODEL into a local path.

Accepted: ``demo`` (the built-in demo VLM shipped in the package), ``zoo:<name>`` (a tiny random
replica, built on demand), an existing directory or file, or a Hugging Face hub id resolved through
the local HF cache. A download happens only when ``download=True``; offline is the default.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlmkit.errors import VlmkitError

DEMO_NAME = "demo"


def demo_path() -> Path:
    return Path(__file__).resolve().parent / "demo" / "weights"


def resolve_model(model: str | os.PathLike, *, download: bool = False, revision: str | None = None) -> Path:
    text = str(model)
    if text == DEMO_NAME:
        path = demo_path()
        if not (path / "config.json").exists():
            raise VlmkitError(path, "the demo model's weights are missing from this install")
        return path
    if text.startswith("zoo:"):
        from vlmkit import zoo

        return zoo.build(text[len("zoo:"):])
    path = Path(text).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(text):
        return _from_hub(text, download=download, revision=revision)
    raise VlmkitError(path, "no such file or directory")


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "/", "~"))


def _from_hub(repo_id: str, *, download: bool, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    # Never fetch pickles or remote code we would not use: weights, configs, tokenizer files only.
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.gguf", "*.npz", "*.tiktoken"]
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, local_files_only=not download, allow_patterns=patterns)
        )
    except LocalEntryNotFoundError:
        hint = "" if download else "; pass --download to fetch it"
        raise VlmkitError(repo_id, f"not a local path and not in the Hugging Face cache{hint}") from None
    except Exception as error:  # network or hub errors: one line, no traceback
        raise VlmkitError(repo_id, f"could not fetch from the hub: {error}") from None
