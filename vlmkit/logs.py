"""Keep third-party log floods (transformers warnings and progress bars, llama.cpp's loader dump) off
the terminal unless the user asked for ``--verbose``."""

from __future__ import annotations

import functools
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


@functools.cache
def quiet_llamacpp() -> None:
    """Route llama.cpp's C-side logging to a no-op callback (kept alive for the process)."""
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def _drop(level, text, user_data):  # noqa: ARG001
        return None

    llama_cpp.llama_log_set(_drop, ctypes.c_void_p(0))
    quiet_llamacpp.callback = _drop  # keep a reference: ctypes would free it otherwise
