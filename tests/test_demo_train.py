"""Training the demo VLM: deterministic for a seed (slow: it trains)."""

import pytest
import torch
from safetensors.torch import load_file

from vlmkit.demo.train import Recipe, lr_at, train


def test_lr_schedule_depends_on_the_step_only():
    short, long = Recipe(steps=300), Recipe(steps=3000)
    assert [lr_at(s, short) for s in range(300)] == [lr_at(s, long) for s in range(300)]
    assert lr_at(Recipe.warmup - 1, short) == Recipe.lr
    assert lr_at(Recipe.warmup + Recipe.half_life, short) == pytest.approx(Recipe.lr / 2)


@pytest.mark.slow
def test_same_seed_same_weights(tmp_path):
    recipe = Recipe(steps=15, batch=4)
    a = load_file(train(tmp_path / "a", recipe, log_every=5) / "model.safetensors")
    b = load_file(train(tmp_path / "b", recipe, log_every=5) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(train(tmp_path / "c", Recipe(steps=15, batch=4, seed=1), log_every=5) / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_full_recipe_reproduces_the_shipped_weights(tmp_path):
    """The README's claim: `python -m vlmkit.demo.train` rebuilds vlmkit/demo/weights (about 25 min on 2 cores).

    Bit-identical on the CPU / torch build that trained it; another CPU may round bf16 matmuls differently.
    """
    from vlmkit.hub import resolve_model

    shipped = load_file(resolve_model("demo") / "model.safetensors")
    fresh = load_file(train(tmp_path / "w", Recipe()) / "model.safetensors")
    assert shipped.keys() == fresh.keys()
    assert all(torch.equal(shipped[k], fresh[k]) for k in shipped)
