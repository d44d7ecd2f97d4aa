"""Keep third-party log floods (transformers warnings and progress bars, llama.cpp's loader dump) off
the terminal unless the user asked for ``--verbose``."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator


def quiet_transformers(verbose: bool = False) -> None:
    """transformers' loading reports, progress bars and deprecation warnings hidden; safe to call before
    transformers is imported (it reads the environment then), so ``--help`` stays instant."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", module="transformers")
    # transformers' argument deprecations point their stack level into torch's Module.__call__
    warnings.filterwarnings("ignore", message=r"`\w+` is deprecated and will be removed in version", category=FutureWarning)
    warnings.filterwarnings("ignore", module="huggingface_hub")
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()


def quiet_llamacpp() -> None:
    """llama.cpp's and mtmd's C-side logs kept off the terminal (``vlmkit.llamacpp.loading`` owns the route)."""
    from vlmkit.llamacpp.loading import llama_cpp_quiet

    llama_cpp_quiet(False)


def quiet_vllm(verbose: bool = False) -> None:
    """vLLM's INFO/WARNING flood and its import-time warnings hidden; call before importing vllm (its logger
    reads ``VLLM_LOGGING_LEVEL`` at import)."""
    if verbose:
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", module="vllm")
    warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*")


@contextlib.contextmanager
def quiet_output(verbose: bool = False) -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null for the block: C++ warnings (torch's NUMA binding notice),
    prints (vLLM's "Triton is installed ..." goes to stdout, which would spoil ``--json``) and loader progress
    bars that no setting turns off. Python exceptions still propagate."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
