"""Shared fixtures: the replica zoo, built once per test session.

``zoo(name) -> Path`` builds (or reuses) a zoo entry. With ``VLMKIT_CACHE`` set, the normal cache is
used (fast re-runs); otherwise entries go to a per-session directory under pytest's tmp dir, shared
by pytest-xdist workers (the zoo's atomic publish makes concurrent builds safe).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where the session's zoo lives; ``None`` means the user's ``$VLMKIT_CACHE``."""
    if os.environ.get("VLMKIT_CACHE"):
        return None
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # one cache for all workers of this run
    return base / "vlmkit-cache"


@pytest.fixture(scope="session")
def zoo(zoo_cache: Path | None) -> Callable[[str], Path]:
    """``zoo("llava-calm2-siglip")`` -> the directory of that replica checkpoint."""
    from vlmkit import zoo as zoo_module

    def get(name: str) -> Path:
        return zoo_module.build(name, zoo_cache)

    return get
