"""`vlmkit run`'s llama.cpp settings on the CPU (issue 12): the threads are the CPUs the process may use, not
the library's fixed 4, for the language model and the vision encoder; the micro-batch and flash attention
reach the context; environment overrides (what bench/seed_scale.py measures) and --threads win."""

from __future__ import annotations

import os

import pytest

import llama_cpp  # noqa: F401  (a test dependency: missing fails the run, never skips it)

from vlmkit.llamacpp.settings import N_UBATCH, cpu_settings, usable_cpus


def test_defaults_follow_the_machine(monkeypatch):
    for name in ("VLMKIT_LLAMACPP_THREADS", "VLMKIT_LLAMACPP_UBATCH", "VLMKIT_LLAMACPP_FLASH_ATTN",
                 "VLMKIT_LLAMACPP_MMAP"):
        monkeypatch.delenv(name, raising=False)
    settings = cpu_settings()
    assert settings.threads == usable_cpus() == len(os.sched_getaffinity(0))
    assert settings.n_ubatch == N_UBATCH
    assert settings.mmap is True    # mapped, repacked tensors' pages given back (RepackedPages)
    assert cpu_settings(3).threads == 3
    monkeypatch.setenv("VLMKIT_LLAMACPP_THREADS", "5")
    monkeypatch.setenv("VLMKIT_LLAMACPP_FLASH_ATTN", "0")
    monkeypatch.setenv("VLMKIT_LLAMACPP_MMAP", "0")
    overridden = cpu_settings()
    assert (overridden.threads, overridden.flash_attn, overridden.mmap) == (5, False, False)
    assert cpu_settings(2).threads == 2


@pytest.fixture(scope="module")
def llava_gguf(tmp_path_factory):
    from vlmkit.convert import convert

    out = tmp_path_factory.mktemp("settings") / "gguf"
    convert("zoo:llava-calm2-siglip", out, dtype="f16", verify=False)
    return out


def test_backend_context_gets_the_settings(llava_gguf, monkeypatch):
    import vlmkit

    monkeypatch.delenv("VLMKIT_LLAMACPP_THREADS", raising=False)
    monkeypatch.setenv("VLMKIT_LLAMACPP_UBATCH", "256")
    runner = vlmkit.load(llava_gguf, device="cpu")
    try:
        backend = runner.backend
        assert backend.ctx is None   # made once, at the size the first prompt needs
        assert runner.generate("Hello", max_new_tokens=2).completion_tokens >= 1
        assert backend.kv_size == 512
        assert llama_cpp.llama_n_threads(backend.ctx) == usable_cpus()
        assert llama_cpp.llama_n_threads_batch(backend.ctx) == usable_cpus()
        assert llama_cpp.llama_n_ubatch(backend.ctx) == 256
        assert backend.settings.mmap is True
        assert backend.mtmd is not None
    finally:
        runner.close()


def _resident_mapped_bytes(path) -> int:
    """This process's resident bytes of its mappings of the file at ``path`` (/proc/self/smaps)."""
    from pathlib import Path

    target, total, inside = str(Path(path).resolve()), 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:   # a mapping's header line
            inside = len(fields) == 6 and fields[5] == target
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


def _logits(model, ids: list[int]):
    from vlmkit.runtime.llamacpp_logits import decode_all

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = 64
    params.n_threads = params.n_threads_batch = 2
    ctx = llama_cpp.llama_init_from_model(model, params)
    try:
        return decode_all(ctx, ids, 0, 64, llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))
    finally:
        llama_cpp.llama_free(ctx)


def test_mapped_weights_are_not_resident_twice(tmp_path, monkeypatch):
    """A mapped q4_0 GGUF on a CPU whose kernels repack it (AVX2): each repacked tensor's mapped pages are
    given back during the load, so RSS holds one copy of those weights, not two; the tensors llama.cpp keeps
    in the mapping stay; the logits are those of a load that reads the file instead."""
    from pathlib import Path

    import numpy as np

    from vlmkit.convert import convert
    from vlmkit.llamacpp import loading
    from vlmkit.readers.gguf_layout import tensor_ranges

    convert("zoo:llama", tmp_path / "gguf", dtype="q4_0", verify=False)
    path = tmp_path / "gguf" / "model.gguf"
    made: list[loading.RepackedPages] = []

    class Recording(loading.RepackedPages):
        def __init__(self, file):
            super().__init__(file)
            made.append(self)

    monkeypatch.setattr(loading, "RepackedPages", Recording)
    mapped = loading.load_model(path, loading.model_params(0, mmap=True))
    read = loading.load_model(path, loading.model_params(0, mmap=False))
    try:
        assert len(made) == 1   # the read load maps nothing, releases nothing
        pages, ranges = made[0], tensor_ranges(path)
        if "avx2" in Path("/proc/cpuinfo").read_text() and loading.extra_buffers_safe():
            assert len(pages.heard) > 2 * 4, pages.heard     # the blocks' q4_0 matrices
        assert "token_embd.weight" not in pages.heard        # read by get_rows from the mapping
        page = pages.page
        inner = sum(max(0, e // page - -(-s // page)) * page for s, e in (ranges[n] for n in pages.heard))
        # given back, or (past the last tensor llama.cpp reads from the mapping) unmapped by llama.cpp itself
        assert 0 < pages.released <= inner or not pages.heard
        resident = _resident_mapped_bytes(path)
        assert 0 < resident <= path.stat().st_size - inner, (resident, inner)
        ids = [1, 5, 9, 42, 7, 3, 11]
        np.testing.assert_array_equal(_logits(mapped, ids), _logits(read, ids))
    finally:
        for model in (mapped, read):
            llama_cpp.llama_model_free(model)
