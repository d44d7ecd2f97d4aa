"""The pixels mtmd gets for an image: what the checkpoint's own image processor makes of it, before normalization.

mtmd resizes every image its own way (LLaVA: letterbox to a square, then its own bicubic), which is not what the
checkpoint's image processor does (SigLIP: stretch to the square; CLIP: shortest edge, then centre crop), so a 4:3
photo gave other answers than transformers. ``model_pixels(config)`` returns a function from an image to the
HxWx3 uint8 picture transformers would normalize (resized, cropped as the processor says); mtmd gets it at the
model's input size, where its own resize is the identity.

Two ways to get there, the same pixels:

* ``PilPixels``, for the processors whose whole geometry is "resize with PIL, then centre-crop" (SigLIP and
  CLIP, transformers' PIL backend), when the saved config spells out every setting: the same PIL ``resize``
  call and crop offsets transformers' ``image_transforms`` make. Why by hand: importing any of transformers'
  image processors imports torch, 2.5-3.5 s of a llama.cpp answer that otherwise never needs torch
  (``tests/test_model_pixels.py`` holds it to transformers' output, pixel for pixel).
* ``TransformersPixels``: the processor class itself (rescale and normalize off) for everything else.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import VlmkitError

Pixels = Callable[[Any], np.ndarray]

# transformers' processors (PIL backend) whose preprocessing is convert-to-RGB -> PIL resize -> centre crop ->
# rescale -> normalize, with no override of those steps (models/{siglip,clip}/image_processing_pil_*.py)
PLAIN_PROCESSORS = frozenset({"SiglipImageProcessor", "SiglipImageProcessorPil", "CLIPImageProcessor",
                              "CLIPImageProcessorPil"})


def rgb_pixels(image: Any) -> np.ndarray:
    """PIL image or HxWx3 uint8 array -> contiguous HxWx3 uint8 RGB (files: ``runtime.prompt.load_image``)."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    array = np.ascontiguousarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise VlmkitError(None, f"image must be HxWx3 RGB, got shape {array.shape}")
    return array


class PilPixels:
    """Resize (fixed height x width, or shortest edge keeping the aspect ratio) then centre-crop, as transformers'
    PIL backend does: ``PilBackend.resize`` -> ``image_transforms.resize`` (PIL) and ``center_crop``."""

    def __init__(self, size: dict[str, int], resample: int, crop: dict[str, int] | None):
        self.size, self.resample, self.crop = size, resample, crop

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PilPixels | None:
        """None unless the config names a plain processor and states each setting the geometry depends on
        (a missing one would take the class's default, which only transformers knows)."""
        if config.get("image_processor_type") not in PLAIN_PROCESSORS or config.get("do_pad"):
            return None
        if importlib.util.find_spec("torchvision") is not None:  # transformers would pick its torchvision backend
            return None
        size, resample, do_crop = config.get("size"), config.get("resample"), config.get("do_center_crop", False)
        if config.get("do_resize") is not True or not isinstance(size, dict) or not isinstance(resample, int):
            return None
        if set(size) not in ({"height", "width"}, {"shortest_edge"}) or "use_square_size" in config:
            return None
        crop = config.get("crop_size") if do_crop else None
        if do_crop and not (isinstance(crop, dict) and set(crop) == {"height", "width"}):
            return None
        return cls(size, resample, crop)

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        picture = Image.fromarray(rgb_pixels(image))
        height, width = self._resized(picture.height, picture.width)
        array = np.asarray(picture.resize((width, height), resample=self.resample))
        if self.crop is None:
            return np.ascontiguousarray(array)
        top, left = (height - self.crop["height"]) // 2, (width - self.crop["width"]) // 2
        if top < 0 or left < 0:  # transformers zero-pads here; not worth a second copy of its rule
            raise VlmkitError(None, f"the image is {width}x{height} after resizing, smaller than the crop")
        return np.ascontiguousarray(array[top:top + self.crop["height"], left:left + self.crop["width"]])

    def _resized(self, height: int, width: int) -> tuple[int, int]:
        """``get_resize_output_image_size(default_to_square=False)``: the short edge to the size, the long one
        scaled and truncated."""
        if "height" in self.size:
            return self.size["height"], self.size["width"]
        edge = self.size["shortest_edge"]
        if width <= height:
            return int(edge * height / width), edge
        return edge, int(edge * width / height)

    def fits(self, height: int, width: int) -> bool:
        """Whether an image of this size crops without transformers' zero padding."""
        h, w = self._resized(height, width)
        return self.crop is None or (h >= self.crop["height"] and w >= self.crop["width"])


class TransformersPixels:
    """The checkpoint's image processor class with rescale and normalize switched off (imports torch)."""

    def __init__(self, config: dict[str, Any]):
        from transformers import AutoImageProcessor

        from vlmkit.logs import quiet_transformers

        quiet_transformers()
        with tempfile.TemporaryDirectory(prefix="vlmkit-processor-") as tmp:
            Path(tmp, "preprocessor_config.json").write_text(json.dumps(config))
            self.processor = AutoImageProcessor.from_pretrained(tmp)

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        picture = Image.fromarray(rgb_pixels(image))
        out = self.processor(images=[picture], do_rescale=False, do_normalize=False, return_tensors="np")
        pixels = np.asarray(out["pixel_values"])[0]
        if pixels.ndim != 3:
            raise VlmkitError(None, f"the image processor gives {pixels.ndim}-d pixels per image (tiled "
                                    "images are not supported on the llama.cpp backend)")
        return np.ascontiguousarray(np.clip(np.rint(pixels.transpose(1, 2, 0)), 0, 255).astype(np.uint8))


class ModelPixels:
    """``PilPixels`` where it applies, else ``TransformersPixels`` (loaded on first use of a case it cannot
    take: an image that would need transformers' zero padding)."""

    def __init__(self, config: dict[str, Any]):
        self.config, self.pil = config, PilPixels.from_config(config)
        self._transformers: TransformersPixels | None = None

    def __call__(self, image: Any) -> np.ndarray:
        array = rgb_pixels(image)
        if self.pil is not None and self.pil.fits(*array.shape[:2]):
            return self.pil(array)
        if self._transformers is None:
            self._transformers = TransformersPixels(self.config)
        return self._transformers(array)

    @classmethod
    def for_mmproj(cls, mmproj: Path) -> ModelPixels | None:
        """From the mmproj's ``vlmkit.mmproj.image_processor`` key; None (mtmd resizes) for mmprojs without
        it or whose processor this transformers cannot load (convert stores the checkpoint's JSON as is)."""
        from vlmkit.gguf_keys import KEY_IMAGE_PROCESSOR
        from vlmkit.readers.gguf_layout import read_values

        text = read_values(mmproj, (KEY_IMAGE_PROCESSOR,)).get(KEY_IMAGE_PROCESSOR)
        if text is None:
            return None
        try:
            pixels = cls(json.loads(str(text)))
            if pixels.pil is None:
                pixels._transformers = TransformersPixels(pixels.config)
            return pixels
        except (OSError, ValueError, KeyError):
            return None
