"""MODEL names: hub ids resolve through the local Hugging Face cache, offline; nothing is downloaded."""

from __future__ import annotations

import shutil

import pytest

from vlmkit.errors import VlmkitError
from vlmkit.hub import resolve_model
from vlmkit.inspect import inspect_model


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, zoo):
    """A hub cache laid out as huggingface_hub writes it, holding the zoo llama as ``acme/tiny-llama``."""
    cache = tmp_path / "hub"
    repo = cache / "models--acme--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(zoo("llama"), repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return repo / "snapshots" / commit


def test_hub_id_resolves_from_local_cache(hf_cache):
    assert resolve_model("acme/tiny-llama") == hf_cache
    assert inspect_model("acme/tiny-llama").params == inspect_model(hf_cache).params


def test_missing_hub_id_says_how_to_fetch(hf_cache):
    with pytest.raises(VlmkitError, match="acme/absent: not a local path and not in the Hugging Face cache; "
                                          "pass --download"):
        resolve_model("acme/absent")


def test_missing_path_is_one_line(tmp_path):
    with pytest.raises(VlmkitError, match="no such file or directory"):
        resolve_model(tmp_path / "nothing-here")


def test_zoo_and_demo_names(zoo):
    llama = resolve_model("zoo:llama")
    assert llama.name.startswith("llama-") and (llama / "config.json").is_file()
    assert (resolve_model("demo") / "config.json").is_file()
    with pytest.raises(VlmkitError, match="no such zoo entry"):
        resolve_model("zoo:nonexistent")
