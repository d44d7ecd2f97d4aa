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
    assert settings.mmap is False   # repacked CPU weights beside a mapped file: ~1.75x the GGUF in RSS
    assert cpu_settings(3).threads == 3
    monkeypatch.setenv("VLMKIT_LLAMACPP_THREADS", "5")
    monkeypatch.setenv("VLMKIT_LLAMACPP_FLASH_ATTN", "0")
    monkeypatch.setenv("VLMKIT_LLAMACPP_MMAP", "1")
    overridden = cpu_settings()
    assert (overridden.threads, overridden.flash_attn, overridden.mmap) == (5, False, True)
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
        assert llama_cpp.llama_n_threads(backend.ctx) == usable_cpus()
        assert llama_cpp.llama_n_threads_batch(backend.ctx) == usable_cpus()
        assert llama_cpp.llama_n_ubatch(backend.ctx) == 256
        assert backend.settings.mmap is False
        assert backend.mtmd is not None
        assert runner.generate("Hello", max_new_tokens=2).completion_tokens >= 1
    finally:
        runner.close()
