"""Keep third-party log floods (transformers warnings and progress bars, llama.cpp's loader dump) off
the terminal unless the user asked for ``--verbose``."""

from __future__ import annotations

import os
import warnings


def quiet_transformers(verbose: bool = False) -> None:
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", message=".*torchvision.*")


def quiet_llamacpp() -> None:
    """llama.cpp's and mtmd's C-side logs kept off the terminal (``vlmkit.gguf.llamacpp`` owns the route)."""
    from vlmkit.gguf.llamacpp import llama_cpp_quiet

    llama_cpp_quiet(False)
