"""Import llama-cpp-python with its log flood hidden (llama.cpp prints every loaded tensor)."""

from __future__ import annotations

from vlmkit.errors import UnsupportedError


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_quiet(verbose: bool = False):
    """The ``llama_cpp`` module with llama.cpp's logging at error level unless ``verbose``."""
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError:
        raise UnsupportedError(None, "llama-cpp-python is not installed (pip install 'vlmkit[llamacpp]')") from None
    _logger.set_verbose(verbose)
    return llama_cpp


def quiet_fds(verbose: bool = False):
    """Silence stdout/stderr at the file-descriptor level: some llama.cpp messages (quantizer warnings,
    context-size notices) bypass the log callback."""
    from llama_cpp._utils import suppress_stdout_stderr

    return suppress_stdout_stderr(disable=verbose)


def open_llama(path, *, verbose: bool = False, extra_buffers: bool = False, **kwargs):
    """``llama_cpp.Llama(path, **kwargs)`` with llama.cpp's extra CPU buffer types off by default.

    Why: on this machine's CPU (AVX512 + AMX_INT8), llama.cpp 0.3.36 segfaults in ``llama_decode`` for
    Q8_0 / Q4_0 weights placed in its repacked "extra" buffers; plain CPU buffers compute the same
    numbers. ``Llama`` has no argument for ``use_extra_bufts``, so the default-params factory it calls
    is wrapped while the model loads.
    """
    llama_cpp = llama_cpp_quiet(verbose)
    from llama_cpp import llama as llama_module

    original = llama_module.llama_cpp.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = extra_buffers
        return p

    llama_module.llama_cpp.llama_model_default_params = params
    try:
        with quiet_fds(verbose):
            return llama_cpp.Llama(str(path), verbose=verbose, **kwargs)
    finally:
        llama_module.llama_cpp.llama_model_default_params = original
