"""The one place vlmkit loads llama.cpp: import llama-cpp-python, route its logs, load models safely.

Used by the run backend (C API, through ``bindings()``), ``vlmkit convert``'s quantize step, mtmd and the
checks of ``vlmkit.eval``. Two things every caller needs and llama-cpp-python does not give:

- quiet logs: llama.cpp prints every loaded tensor; one log callback (llama.cpp and mtmd) drops them
  unless verbose, but keeps the last lines so an error can quote the loader's complaint (``last_error``);
- memory-mapped weights that do not stay resident twice (``RepackedPages``): see below;
- a safe CPU buffer choice: on CPUs with AMX, llama.cpp 0.3.36 segfaults in ``ggml_backend_amx_mul_mat``
  for quantized weights (q8_0, q4_0, q4_k_m) in its "extra" (repacked) CPU buffers; plain CPU buffers
  compute the same numbers. ``llama_model_params.use_extra_bufts`` is off there (``extra_buffers_safe``).

On CPUs whose kernels want the weights repacked (AVX2 / AVX-512: q4_0, q4_K, iq4_nl ...), llama.cpp loads a
memory-mapped GGUF by mapping the whole file (pre-faulted), then copying each such tensor into its own
repacked buffer; the mapped pages stay resident beside the copies (the 7.5 B llava-calm2-siglip replica at
q4_k_m: 8.95 GB peak for 5.1 GB of files). Reading the file instead (no mapping) keeps one copy but takes
1.3 s longer for its 4.3 GB. ``RepackedPages`` keeps the mapping and gives each repacked tensor's mapped pages
back to the page cache (``madvise(MADV_DONTNEED)``) as soon as llama.cpp moves on to the next one: llama.cpp
logs every tensor it repacks (``repack: repack tensor NAME with ...``), and the log callback here sees it. A
released page that is read again faults back in from the page cache, so a wrong guess costs time, never
correctness; tensors llama.cpp keeps in the mapping (the token embeddings, types without a repacked kernel)
are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import re
import sys
from collections import deque
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError, VlmkitError

_LOG_TAIL: deque[str] = deque(maxlen=40)
_VERBOSE = [False]
_CALLBACK: list[Any] = []  # keeps the ctypes callback alive for the life of the process
_LOADING: list[RepackedPages] = []   # the load in progress that wants to hear of repacked tensors
_REPACK_LINE = re.compile(r"repack tensor (\S+) with")


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def server_available() -> bool:
    """Whether llama-cpp-python's OpenAI server (the ``[server]`` extra: fastapi, uvicorn) imports."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_quiet(verbose: bool | None = False):
    """The ``llama_cpp`` module, its (and mtmd's) logs routed through ``install_log`` (``verbose=None``:
    keep the current setting)."""
    try:
        import llama_cpp
    except ImportError:
        raise UnsupportedError(None, "llama-cpp-python is not installed (pip install 'vlmkit[llamacpp]')") from None
    install_log(verbose)
    return llama_cpp


def bindings():
    """The ``llama_cpp`` module for callers outside ``vlmkit.llamacpp`` (the runtime's C-API calls): loaded
    here, once, with the log route installed, so no other module imports llama-cpp-python itself."""
    return llama_cpp_quiet(None)


def install_log(verbose: bool | None) -> None:
    """Route llama.cpp / mtmd logs through one callback: printed when ``verbose``, otherwise only kept
    so an error message can quote the loader's last complaint. Later calls just change ``verbose``
    (``None``: leave it)."""
    import llama_cpp
    from llama_cpp import mtmd_cpp

    if verbose is not None:
        _VERBOSE[0] = verbose
    if _CALLBACK:
        return

    @llama_cpp.llama_log_callback
    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", "replace")
        _LOG_TAIL.append(line)
        if _LOADING and (repacked := _REPACK_LINE.search(line)):
            _LOADING[-1].repacking(repacked.group(1))
        if _VERBOSE[0]:
            print(line, end="", file=sys.stderr, flush=True)

    _CALLBACK.append(on_log)
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_log_set(on_log, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def last_error() -> str:
    """The last error-looking line llama.cpp logged (for one-line user errors)."""
    lines = [ln.strip() for ln in _LOG_TAIL if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failed" in ln.lower() or "unknown" in ln.lower()]
    return (errors or lines or ["no details logged"])[-1]


def quiet_fds(verbose: bool = False):
    """Silence stdout/stderr at the file-descriptor level: some llama.cpp messages (quantizer warnings,
    context-size notices) bypass the log callback."""
    from llama_cpp._utils import suppress_stdout_stderr

    return suppress_stdout_stderr(disable=verbose)


def extra_buffers_safe() -> bool:
    """Whether to let ggml use its "extra" CPU buffer types (AMX, repacked weights): not on CPUs with
    AMX (see the module docstring). ``VLMKIT_LLAMACPP_EXTRA_BUFTS=1`` / ``=0`` overrides."""
    forced = os.environ.get("VLMKIT_LLAMACPP_EXTRA_BUFTS")
    if forced is not None:
        return forced not in ("0", "", "false")
    try:
        return "amx_int8" not in Path("/proc/cpuinfo").read_text()
    except OSError:
        return True


def model_params(gpu_layers: int = 0, extra_buffers: bool | None = None, vocab_only: bool = False,
                 mmap: bool | None = None) -> Any:
    """``llama_model_default_params()`` with vlmkit's safe buffer choice (None: ``extra_buffers_safe()``);
    ``mmap``: memory-map the weights (True) or read them into llama.cpp's buffers (False); None: its default."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    if mmap is not None:
        params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    params.n_gpu_layers = gpu_layers
    params.use_extra_bufts = extra_buffers_safe() if extra_buffers is None else extra_buffers
    params.vocab_only = vocab_only
    return params


def load_model(path: str | Path, params: Any | None = None, verbose: bool | None = None) -> Any:
    """A ``llama_model *`` (C API) loaded quietly with ``params`` (default ``model_params()``); the
    caller frees it with ``llama_model_free``. Raises VlmkitError quoting llama.cpp's last complaint.
    A memory-mapped load gives the mapped pages of repacked tensors back as it goes (``RepackedPages``)."""
    llama_cpp = llama_cpp_quiet(verbose)
    params = model_params() if params is None else params
    mapped = params.load_mode in (llama_cpp.LLAMA_LOAD_MODE_MMAP, llama_cpp.LLAMA_LOAD_MODE_AUTO)
    repacks = mapped and params.use_extra_bufts and not params.vocab_only
    pages = RepackedPages(Path(path)) if repacks and RepackedPages.supported() else None
    if pages is not None:
        _LOADING.append(pages)
    try:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    finally:
        if pages is not None:
            _LOADING.remove(pages)
            pages.finish()
    if not model:
        raise VlmkitError(path, f"llama.cpp could not load this model: {last_error()}")
    return model


class RepackedPages:
    """Gives back the mapped pages of each tensor llama.cpp has copied into a repacked buffer (see the module
    docstring). Linux only (``/proc/self/maps``, ``madvise``)."""

    def __init__(self, path: Path):
        from vlmkit.readers.gguf_layout import tensor_ranges

        self.path, self.ranges = Path(os.path.realpath(path)), tensor_ranges(path)
        self.page = mmap.PAGESIZE
        self.pending: str | None = None
        self.base: int | None = None
        self.heard: list[str] = []   # the tensors llama.cpp said it repacked, in order
        self.released = 0            # bytes given back

    @staticmethod
    def supported() -> bool:
        return sys.platform.startswith("linux") and hasattr(mmap, "MADV_DONTNEED")

    def repacking(self, name: str) -> None:
        """llama.cpp starts repacking ``name``: the tensor before it is done."""
        self._release(self.pending)
        self.pending = name
        self.heard.append(name)

    def finish(self) -> None:
        self._release(self.pending)
        self.pending = None

    def _release(self, name: str | None) -> None:
        if name not in self.ranges or self._mapping_start() is None:
            return
        start, end = self.ranges[name]
        first = -(-(self.base + start) // self.page) * self.page   # whole pages only: the edges may be
        last = (self.base + end) // self.page * self.page          # shared with a tensor still in use
        if last > first and _libc().madvise(first, last - first, mmap.MADV_DONTNEED) == 0:
            self.released += last - first

    def _mapping_start(self) -> int | None:
        """Where llama.cpp mapped the file (its one whole-file, offset-0 mapping)."""
        if self.base is None:
            try:
                lines = Path("/proc/self/maps").read_text().splitlines()
            except OSError:
                return None
            spans = []
            for line in lines:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5] == str(self.path) and int(fields[2], 16) == 0:
                    begin, end = (int(v, 16) for v in fields[0].split("-"))
                    spans.append((end - begin, begin))
            self.base = max(spans)[1] if spans else None
        return self.base


@functools.cache
def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc
