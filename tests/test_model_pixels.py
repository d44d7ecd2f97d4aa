"""The pixels mtmd gets are transformers' image processor's, pixel for pixel, without importing torch (issue 12).

``vlmkit.llamacpp.pixels.PilPixels`` repeats transformers' PIL-backend geometry (resize, centre crop) so that a
llama.cpp answer never imports torch (2.5-3.5 s of start-up); these tests hold it to the processor classes
themselves on photos of other shapes than the models' inputs, and check the run path really stays torch-free.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlmkit.llamacpp.pixels import ModelPixels, PilPixels, TransformersPixels

SIGLIP_384 = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
              "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "SiglipImageProcessor", "image_std": [0.5] * 3,
              "resample": 3, "rescale_factor": 1 / 255, "size": {"height": 384, "width": 384}}
CLIP_336 = {"crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 336}}
CONFIGS = {
    "siglip-384-bicubic": SIGLIP_384,
    "siglip-224-bilinear": {**SIGLIP_384, "resample": 2, "size": {"height": 224, "width": 224}},
    "clip-336": CLIP_336,
    "clip-56-odd-crop": {**CLIP_336, "size": {"shortest_edge": 57}, "crop_size": {"height": 55, "width": 56}},
    "clip-lanczos": {**CLIP_336, "resample": 1, "image_processor_type": "CLIPImageProcessorPil"},
}


def photos():
    """scikit-image photos at sizes the models were not made for: 4:3, 3:4, wide strips, tiny, upscaled."""
    from PIL import Image
    from skimage import data

    yield "chelsea-451x300", Image.fromarray(data.chelsea())
    yield "coffee-600x400", Image.fromarray(data.coffee())
    yield "astronaut-640x480", Image.fromarray(data.astronaut()).resize((640, 480), Image.BILINEAR)
    yield "rocket-427x640", Image.fromarray(data.rocket())
    yield "strip-997x61", Image.fromarray(data.coffee()).resize((997, 61), Image.BILINEAR)
    yield "tiny-17x23", Image.fromarray(data.chelsea()).resize((17, 23), Image.NEAREST)
    yield "camera-grey", Image.fromarray(data.camera())


@pytest.mark.parametrize("name", CONFIGS)
def test_pil_pixels_equal_the_processor_classes(name):
    config = CONFIGS[name]
    ours = PilPixels.from_config(config)
    assert ours is not None, "a plain SigLIP / CLIP config must take the torch-free path"
    reference = TransformersPixels(config)
    for label, image in photos():
        if not ours.fits(image.height, image.width):
            continue
        mine, theirs = ours(image), reference(image)
        assert mine.dtype == np.uint8 and mine.shape == theirs.shape, (label, mine.shape, theirs.shape)
        assert np.array_equal(mine, theirs), (label, int(np.abs(mine.astype(int) - theirs).max()))


def test_zoo_and_seed_processors_take_the_torch_free_path(zoo):
    from vlmkit.gguf.mmproj import image_processor_json
    from vlmkit.hub import resolve_model

    for folder in (zoo("llava-calm2-siglip"), zoo("llava-clip"), resolve_model("demo")):
        config = json.loads(image_processor_json(folder))
        assert PilPixels.from_config(config) is not None, folder


def test_other_processors_and_incomplete_configs_go_through_transformers():
    """Anything the hand path cannot vouch for (another class, a setting left to the class default, padding,
    an image smaller than the crop) is the processor's own."""
    for config in ({**SIGLIP_384, "image_processor_type": "LlavaOnevisionImageProcessor"},
                   {k: v for k, v in SIGLIP_384.items() if k != "resample"},
                   {**CLIP_336, "do_pad": True}, {**CLIP_336, "size": 336}):
        assert PilPixels.from_config(config) is None, config
    from PIL import Image

    tiny = Image.new("RGB", (3, 2000), (10, 200, 30))   # 336 x 224000 -> crop fits; 2000 x 3 short edge fine
    pixels = ModelPixels({**CLIP_336, "size": {"shortest_edge": 100}, "crop_size": {"height": 120, "width": 120}})
    out = pixels(tiny)                                   # 100 wide < 120: transformers zero-pads
    assert pixels._transformers is not None and out.shape == (120, 120, 3)
    assert np.array_equal(out, TransformersPixels(pixels.config)(tiny))


@pytest.mark.llamacpp
def test_llamacpp_image_answer_never_imports_torch(zoo, tmp_path):
    """``vlmkit run`` on a GGUF with an mmproj and a photo: llama.cpp, mtmd, PIL, numpy; no torch."""
    from module_audit import vlmkit_modules

    from vlmkit.convert import convert

    out = tmp_path / "gguf"
    convert(zoo("llava-calm2-siglip"), out, dtype="f16", verify=False)
    image = tmp_path / "chelsea.png"
    dict(photos())["chelsea-451x300"].save(image)
    lines, modules = vlmkit_modules("run", str(out), "--image", str(image), "--prompt", "What is this?",
                                    "--max-new-tokens", "3", "--json")
    assert json.loads(lines[-1])["completion_tokens"] >= 1
    assert not [m for m in modules if m.split(".")[0] == "torch"], modules
