"""Non-square photos give the same answers on transformers and on the GGUF (issue 14, deliverable 0).

Each backend must turn a 640x480, 480x640 or 200x64 photo into the pixels the checkpoint's own image
processor makes (SigLIP: stretch to the square; CLIP: shortest edge + centre crop, bicubic); mtmd's own
resize (letterbox) gave the demo model other answers on 11-19 of 30 questions per shape.
"""

from __future__ import annotations

import pytest

import vlmkit

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp

SHAPES = {"640x480": "chelsea", "480x640": "coffee", "200x64": "astronaut"}
QUESTIONS = ("What color is the square?", "Is there a circle in the image?", "How many shapes are there?",
             "Is the square blue? Please answer yes or no.")
MODELS = [("demo", "f32"), ("demo", "f16"), ("zoo:llava-calm2-siglip", "f32"), ("zoo:llava-calm2-siglip", "f16"),
          ("zoo:llava-clip", "f32"), ("zoo:llava-clip", "f16")]


def photo(shape: str):
    """A scikit-image photo resized (by the test, not by vlmkit) to ``shape`` (width x height)."""
    from PIL import Image
    from skimage import data

    width, height = (int(v) for v in shape.split("x"))
    return Image.fromarray(getattr(data, SHAPES[shape])()).resize((width, height), Image.BILINEAR)


@pytest.fixture(scope="module", params=MODELS, ids=lambda m: f"{m[0]}-{m[1]}")
def converted(request, tmp_path_factory):
    from vlmkit.convert import convert

    model, dtype = request.param
    out = tmp_path_factory.mktemp("fidelity") / "gguf"
    convert(model, out, dtype=dtype, verify=False)
    return model, out


def test_greedy_answers_equal_for_non_square_photos(converted):
    model, out = converted
    with vlmkit.load(out, device="cpu", threads=2) as gguf, vlmkit.load(model, dtype="f32", device="cpu") as hf:
        for shape in SHAPES:
            image = photo(shape)
            for question in QUESTIONS:
                ours = gguf.generate(question, images=[image], max_new_tokens=6)
                ref = hf.generate(question, images=[image], max_new_tokens=6)
                assert ours.prompt_tokens == ref.prompt_tokens
                assert ours.token_ids == ref.token_ids, (shape, question, ours.text, ref.text)


@pytest.mark.parametrize("model", ["demo", "zoo:llava-calm2-siglip", "zoo:llava-clip"])
def test_mtmd_sees_the_processor_pixels(model, tmp_path):
    """The zoo's random replicas answer the same words whatever the image, so the image rows themselves
    are compared: mtmd fed the original photo vs transformers' processor + tower on the same photo."""
    from vlmkit.convert import convert
    from vlmkit.gguf.mmproj_verify import verify_image_embeddings
    from vlmkit.hub import resolve_model

    convert(model, tmp_path / "gguf", dtype="f32", verify=False)
    for shape in SHAPES:
        report = verify_image_embeddings(resolve_model(model), tmp_path / "gguf", image=photo(shape))["resize"]
        assert report["image_size"] == [int(v) for v in shape.split("x")]
        assert report["min_token_cosine"] > 0.9999, (shape, report)
        assert report["max_abs_diff"] < 1e-3 * report["ref_max_abs"], (shape, report)


def test_model_pixels_are_the_processors(zoo):
    """``ModelPixels`` (the llama.cpp side) normalized as mtmd does == transformers' pixel_values."""
    import json

    import numpy as np
    from transformers import AutoImageProcessor

    from vlmkit.gguf.mmproj import image_processor_json
    from vlmkit.gguf.mtmd import ModelPixels

    for name in ("llava-calm2-siglip", "llava-clip"):
        processor = AutoImageProcessor.from_pretrained(zoo(name))
        pixels = ModelPixels(json.loads(image_processor_json(zoo(name))))
        mean, std = np.float32(processor.image_mean), np.float32(processor.image_std)
        for shape in SHAPES:
            ours = pixels(photo(shape))
            ref = processor(images=photo(shape), return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
            assert ours.dtype == np.uint8 and ours.shape == ref.shape
            np.testing.assert_allclose((ours / np.float32(255) - mean) / std, ref, atol=1e-6)
