"""Training the demo VLM: deterministic for a seed (a few steps here; the full recipe with -m slow)."""

import pytest
import torch
from safetensors.torch import load_file

from vlmkit.demo.dataset import scene_rng
from vlmkit.demo.questions import YES_NO, open_color
from vlmkit.demo.scenes import COLORS, SHAPES, random_scene
from vlmkit.demo.train import (STAGES, Recipe, encode_sample_with_scene, evidence_targets, has_evidence, lr_at,
                                patch_targets, train, train_demo)


def test_lr_schedule_depends_on_the_step_only():
    short, long = Recipe(steps=300), Recipe(steps=3000)
    assert [lr_at(s, short) for s in range(300)] == [lr_at(s, long) for s in range(300)]
    assert lr_at(Recipe.warmup - 1, short) == Recipe.lr
    assert lr_at(Recipe.warmup + Recipe.half_life, short) == pytest.approx(Recipe.lr / 2)


def test_evidence_points_at_the_answering_object_only_when_the_answer_is_yes():
    checked = 0
    for index in range(40):
        rng = scene_rng("train", index, 0)
        scene = random_scene(rng)
        covered = patch_targets(scene)  # (patches, colors x shapes)
        for category in ("existence", "color", "position"):
            yes, no = YES_NO[category](scene, rng, True, "en"), YES_NO[category](scene, rng, False, "en")
            assert evidence_targets(no).sum() == 0 and has_evidence(yes) and has_evidence(no)
            target = evidence_targets(yes)
            obj = yes.evidence
            assert obj.color in yes.question and obj.shape in yes.question
            assert 1 <= target.sum() <= 16  # a few of the 16 patches; a big lone shape most of them
            column = covered[:, list(COLORS).index(obj.color) * len(SHAPES) + SHAPES.index(obj.shape)]
            assert (target == column).all()
            checked += 1
        asked = open_color(scene, rng, "ja")
        assert evidence_targets(asked).sum() >= 1
        assert not has_evidence(YES_NO["count"](scene, rng, True, "en"))
    assert checked == 120


def test_same_seed_same_weights(tmp_path):
    """The determinism the README's reproduction relies on, in a few steps (the full recipe: -m slow)."""
    recipe = Recipe(steps=4, batch=2)
    a = load_file(train(tmp_path / "a", recipe, log_every=5) / "model.safetensors")
    b = load_file(train(tmp_path / "b", recipe, log_every=5) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = load_file(train(tmp_path / "c", Recipe(steps=4, batch=2, seed=1), log_every=5) / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("stage, digest", [(1, "9d30f0aef06b5df3"), (2, "f4a19a2261e00fa3")])
def test_a_new_stage_leaves_the_earlier_stages_samples_alone(stage, digest):
    """The shipped weights are stage 1, then 2, then 3: each stage added later (its own options, e.g. stage 3's
    position_share) must draw exactly what the earlier stages drew. Digest of the first 64 samples' token ids,
    labels, scenes and pixels, as the recipe drew them when those stages were trained."""
    import hashlib

    from transformers import AutoProcessor

    from vlmkit.hub import demo_path

    tokenizer = AutoProcessor.from_pretrained(demo_path()).tokenizer
    h = hashlib.sha256()
    for index in range(64):
        ids, labels, image, scene, _ = encode_sample_with_scene(tokenizer, index, STAGES[stage - 1])
        h.update(repr((ids, labels, scene)).encode())
        h.update(image.tobytes())
    assert h.hexdigest()[:16] == digest


@pytest.mark.slow
def test_full_recipe_reproduces_the_shipped_weights(tmp_path):
    """The README's claim: `vlmkit demo train --out DIR` rebuilds vlmkit/demo/weights (three stages, about 66 min).

    Bit-identical on the CPU / torch build that trained it; another CPU may round bf16 matmuls differently.
    """
    from vlmkit.hub import resolve_model

    shipped = load_file(resolve_model("demo") / "model.safetensors")
    fresh = load_file(train_demo(tmp_path / "w") / "model.safetensors")
    assert shipped.keys() == fresh.keys()
    assert all(torch.equal(shipped[k], fresh[k]) for k in shipped)


def test_training_never_overwrites_the_shipped_weights():
    """`vlmkit demo train` needs --out, and no --out may point at the shipped weights."""
    from typer.testing import CliRunner

    from vlmkit.cli import _register, app
    from vlmkit.errors import VlmkitError
    from vlmkit.hub import demo_path

    before = {p.name: p.stat().st_mtime_ns for p in demo_path().iterdir()}
    with pytest.raises(VlmkitError, match="refusing to overwrite the shipped demo weights"):
        train(demo_path(), Recipe(steps=1, batch=1))
    _register()
    result = CliRunner().invoke(app, ["demo", "train"])
    assert result.exit_code == 2 and "--out" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in demo_path().iterdir()} == before
