"""``convert --verify`` sized to the machine (issue 12): the transformers reference is held whole at f32 when
it fits, one decoder block at a time when only that fits (same numbers), and a check that cannot fit says so
in one line while the conversion is still delivered. The memory probe is faked; nothing exhausts RAM."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import llama_cpp  # noqa: F401  (a test dependency: missing fails the run, never skips it)

from vlmkit.convert import convert
from vlmkit.eval import reference
from vlmkit.eval.reference import GIB, ReferenceBackend, ReferencePlan, plan_reference
from vlmkit.runtime.base import IMAGE

# llava-calm2-siglip's real proportions: 7.46 B parameters at f32 = 29.8 GB, of which the vision tower,
# projector, embeddings and head (outside the 32 decoder blocks) 3.9 GB and one block 0.81 GB
SEVEN_B = reference._Sizes(whole=29_834_711_296, outside=3_905_216_000, block=810_303_488)


@pytest.fixture()
def seven_b_on_this_machine(monkeypatch):
    """The zoo replica planned as if it were the 7.5 B model on a machine with 22 GiB available."""
    monkeypatch.setattr(reference, "_sizes", lambda model_dir: SEVEN_B)
    monkeypatch.setattr(reference.memory, "available_bytes", lambda: 22 * GIB)


def test_plan_picks_whole_then_staged_then_explains(tmp_path):
    model, mmproj = tmp_path / "model.gguf", tmp_path / "mmproj.gguf"
    model.write_bytes(b"\0" * 1000)
    mmproj.write_bytes(b"\0" * 10)
    sizes = reference._Sizes(whole=10 * GIB, outside=2 * GIB, block=GIB)
    original = reference._sizes
    try:
        reference._sizes = lambda model_dir: sizes
        assert plan_reference(tmp_path, [model, mmproj], available=13 * GIB).mode == "whole"
        staged = plan_reference(tmp_path, [model, mmproj], available=8 * GIB)
        assert staged.mode == "staged"
        assert staged.staged_bytes == 2 * GIB + 3 * GIB + 10 + reference.MARGIN_BYTES
        assert "one decoder block at a time" in staged.note()
        with pytest.raises(reference.UnsupportedError) as error:
            plan_reference(tmp_path, [model, mmproj], available=4 * GIB)
        assert "needs 7.0 GiB" in error.value.reason and "4.0 GiB available" in error.value.reason
        assert "\n" not in str(error.value)
    finally:
        reference._sizes = original


def test_seven_b_plan_fits_this_machine_only_staged(tmp_path):
    gguf = tmp_path / "model.gguf"
    with open(gguf, "wb") as f:   # a sparse file the size of the 7.5 B model's f16 GGUF
        f.truncate(14_917_000_000)
    original = reference._sizes
    try:
        reference._sizes = lambda model_dir: SEVEN_B
        plan = plan_reference(tmp_path, [gguf], available=22 * GIB)
    finally:
        reference._sizes = original
    assert plan.mode == "staged"
    assert plan.whole_bytes > 22 * GIB > plan.need_bytes
    assert plan.need_bytes == plan.llama_bytes   # llama.cpp's f16 copy is the larger phase, not the reference


def test_staged_reference_gives_the_whole_models_logits(zoo):
    """The block-by-block reference is transformers' model: same logits (text and image prompts) as the
    whole model at f32, and the same image features."""
    import numpy as np
    from PIL import Image

    from vlmkit.eval.image_parity import test_image
    from vlmkit.runtime.prompt import user_message, uses_typed_content

    model_dir = zoo("llava-calm2-siglip")
    image = Image.fromarray(test_image(96))
    logits, features = {}, {}
    for mode in ("whole", "staged"):
        backend = ReferenceBackend(model_dir, ReferencePlan(mode, 0, 0, 0, 0), threads=2)
        try:
            messages = [user_message("What is in the picture?", 1, uses_typed_content(backend.chat_template()),
                                     backend.image_placeholder)]
            with_image = backend.encode(messages, [image]) + [5, 6, 7]
            assert with_image.count(IMAGE) == 1
            backend.load()
            logits[mode] = backend.logits_many([(backend.tokenize("東京の天気は", True), []), (with_image, [image])],
                                               progress=False)
            features[mode] = backend.image_embeddings(image)
        finally:
            backend.close()
    for whole, staged in zip(logits["whole"], logits["staged"]):
        assert whole.shape == staged.shape
        np.testing.assert_allclose(staged, whole, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(features["staged"], features["whole"])


def test_convert_verifies_staged_when_the_whole_model_does_not_fit(zoo, tmp_path, seven_b_on_this_machine):
    result = convert(zoo("llava-calm2-siglip"), tmp_path / "out", dtype="f32", verify=True, threads=2)
    report = result.verify
    assert result.verify_error is None
    assert report.reference["mode"] == "staged"
    assert any("one decoder block at a time" in note for note in report.notes)
    assert report.ok and report.greedy_identical
    assert [len(g.hf_tokens) for g in report.greedy] == [16, 16]
    assert report.teacher.mean_kld <= 1e-6 and report.teacher.same_top1 == 1.0
    assert report.image_greedy["first_diff"] is None and report.image_greedy["teacher"]["same_top1"] == 1.0
    assert report.image["cosine"] > 0.99999


def test_check_that_cannot_fit_says_why_and_the_output_is_delivered(zoo, tmp_path, monkeypatch):
    monkeypatch.setattr(reference.memory, "available_bytes", lambda: GIB)
    model_dir = zoo("llava-calm2-siglip")
    result = convert(model_dir, tmp_path / "default", dtype="f16", threads=2)   # verify by default
    assert result.verify is None and result.verify_error is None
    assert (tmp_path / "default" / "model.gguf").is_file() and (tmp_path / "default" / "mmproj.gguf").is_file()
    [note] = [n for n in result.notes if n.startswith("parity check skipped")]
    assert "1.0 GiB available: not run" in note and "free" in note

    from vlmkit.cli import _register, app

    _register()
    run = CliRunner().invoke(app, ["convert", str(model_dir), "--out", str(tmp_path / "asked"), "--dtype", "f16",
                                   "--verify", "--threads", "2"])
    assert run.exit_code == 2, run.output
    assert (tmp_path / "asked" / "model.gguf").is_file()
    assert "could not run: the parity check needs" in run.output and "Traceback" not in run.output
