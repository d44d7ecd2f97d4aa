"""Do llama.cpp's image embeddings (mtmd + our mmproj.gguf) equal transformers' ``get_image_features``?

``verify_image_embeddings(model_dir, gguf_dir, image=None) -> dict`` compares, on the same pixels:

* ``cosine`` / ``max_abs_diff``: mtmd at its defaults vs transformers in fp32, over the rows that hold the
  same tokens (``vlmkit.mmproj.llamacpp_rows`` / ``hf_rows``; see ``vlmkit.gguf.mmproj``);
* ``cosine_emulated`` / ``max_abs_diff_emulated``: mtmd with flash attention off vs transformers with
  ggml's CPU approximations reproduced, so what remains is the conversion itself. Why hand-written: these
  are ggml kernels' documented behaviour, not something a library exposes. ggml evaluates GELU and
  quick-GELU through an fp16 table (input and output rounded to fp16; GELU is the tanh form, and
  x <= -10 -> 0, x >= 10 -> x), and ``ggml_conv_2d`` im2cols pixels and kernel to fp16 unless the kernel
  is bf16; flash attention (on by default on the CPU) casts K and V to fp16;
* ``resize``: when ``image`` is not at the model's input size, ``MtmdEncoder`` on the original image (the
  checkpoint's processor resizes / crops it, see ``vlmkit.llamacpp.pixels.ModelPixels``; mtmd's own resize for
  mmprojs without the processor config) vs the transformers image processor on the original image. The
  main comparison then uses the image resized to the input size first (identical pixels for both sides).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import VlmkitError


def verify_image_embeddings(model_dir: Path, gguf_path: Path, image=None, *, text_model: Path | None = None,
                            model=None, verbose: bool = False) -> dict[str, Any]:
    """Compare ``gguf_path`` (a directory with mmproj.gguf and maybe model.gguf, or the mmproj file) against
    the HF model in ``model_dir`` on ``image`` (PIL image, path or HxWx3 uint8; None: a generated test
    image). ``text_model``: model.gguf, for mtmd's n_embd check (default: beside the mmproj, if there).
    ``model``: an already loaded ``LlavaForConditionalGeneration`` (fp32) to reuse."""
    import torch

    from vlmkit.gguf.mmproj import image_normalization
    from vlmkit.llamacpp.mtmd import MtmdEncoder
    from vlmkit.llamacpp.pixels import rgb_pixels
    from vlmkit.runtime.prompt import load_image

    model_dir, gguf_path = Path(model_dir), Path(gguf_path)
    mmproj = gguf_path / "mmproj.gguf" if gguf_path.is_dir() else gguf_path
    text_model = Path(text_model) if text_model is not None else mmproj.parent / "model.gguf"
    meta = read_metadata(mmproj)
    size = meta["clip.vision.image_size"]
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)  # the one image loader: a bad file is one line naming it
    original = rgb_pixels(image) if image is not None else test_image(size)
    pixels = original if original.shape[:2] == (size, size) else _resize(original, size)
    hf_model = model if model is not None else _load_hf(model_dir)
    mean, std = image_normalization(model_dir)
    pixel_values = _normalize(pixels, mean, std)
    text = text_model if text_model.is_file() else None
    with MtmdEncoder(mmproj, text, verbose=verbose) as enc:
        llama = enc.encode(pixels)
        llama_resized = enc.encode(original) if pixels is not original else None
    with MtmdEncoder(mmproj, text, flash_attn=False, verbose=verbose) as enc:
        llama_exact = enc.encode(pixels)
    with torch.no_grad():
        ref = _features(hf_model, pixel_values)
        with ggml_approximations(hf_model, meta):
            ref_emulated = _features(hf_model, pixel_values)
    rows = _rows(meta)
    report = {"n_tokens": int(llama.shape[0]), "n_tokens_transformers": int(ref.shape[0]),
              "matched_tokens": rows[0][1] - rows[0][0], **compare(llama, ref, rows),
              **compare(llama_exact, ref_emulated, rows, "_emulated"), "notes": notes(meta)}
    if llama_resized is not None:
        report["resize"] = _resize_report(model_dir, hf_model, original, llama_resized, rows)
    return report


def read_metadata(mmproj: Path) -> dict[str, Any]:
    """The mmproj's key/values (scalars, strings and arrays) through gguf-py's reader."""
    import gguf

    if not Path(mmproj).is_file():
        raise VlmkitError(mmproj, "no mmproj.gguf here")
    reader = gguf.GGUFReader(mmproj)
    meta = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    meta["tensor_types"] = {t.name: t.tensor_type.name for t in reader.tensors}
    return meta


def test_image(size: int) -> np.ndarray:
    """A deterministic picture (smooth gradients, a disc, a bar): natural-ish statistics, no file."""
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    disc = ((x - 0.35) ** 2 + (y - 0.4) ** 2) < 0.06
    bar = (np.abs(y - 0.75) < 0.08) & (x > 0.5)
    rgb = np.stack([200 * x + 40 * disc, 180 * y + 60 * bar, 120 * (1 - x * y) + 100 * disc], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def verify_photo() -> tuple[str, np.ndarray]:
    """The non-square picture ``convert --verify`` checks with (most photos are 4:3): scikit-image's cat
    photo (451x300) when scikit-image is installed, else ``test_image`` cut to 4:3. Returns (name, pixels)."""
    try:
        from skimage import data
    except ImportError:
        return "test picture 640x480", test_image(640)[:480]
    return "scikit-image chelsea 451x300", data.chelsea()


def compare(llama: np.ndarray, ref: np.ndarray, rows, suffix: str = "") -> dict[str, float]:
    """Cosine (all matched rows flattened), worst per-token cosine, max |diff| and the reference scale."""
    (a0, a1), (b0, b1) = rows
    a, b = llama[a0:a1].astype(np.float64), ref[b0:b1].astype(np.float64)
    if a.shape != b.shape:
        raise VlmkitError(None, f"image embeddings: llama.cpp rows {a.shape} vs transformers rows {b.shape}")
    token_cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    cosine = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    return {f"cosine{suffix}": cosine, f"min_token_cosine{suffix}": float(token_cos.min()),
            f"max_abs_diff{suffix}": float(np.abs(a - b).max()), f"ref_max_abs{suffix}": float(np.abs(b).max())}


def notes(meta: dict[str, Any]) -> list[str]:
    out = []
    (a0, a1), (b0, b1) = _rows(meta)
    n = a1 - a0
    if a0 == 1:
        out.append(f"mtmd gives {n + 1} image tokens, transformers {n}: the 'default' strategy drops SigLIP's "
                   "first patch, mtmd cannot (its first row is that patch); vlmkit drops it "
                   "(MtmdEncoder.encode(transformers_layout=True) + decode_image)")
    if b0 == 1:
        out.append(f"llama.cpp's last image row is the CLS output in place of patch 0 (llama.cpp issue "
                   f"#25814); the other {n} rows are compared")
    out.append("runtime approximations (see *_emulated): ggml GELU via fp16 table (tanh form), "
               "patch conv via fp16 im2col, flash-attention K/V in fp16")
    return out


def _rows(meta: dict[str, Any]) -> tuple[list[int], list[int]]:
    return list(meta["vlmkit.mmproj.llamacpp_rows"]), list(meta["vlmkit.mmproj.hf_rows"])


def _load_hf(model_dir: Path):
    """The fp32 model as the transformers backend loads it (the one place vlmkit loads HF models)."""
    from vlmkit.runtime.transformers_backend import TransformersBackend

    return TransformersBackend(Path(model_dir), device="cpu", dtype="f32").model


def _normalize(pixels: np.ndarray, mean: list[float], std: list[float]):
    """What mtmd does (u8 / 255, then (x - mean) / std, in float32), as a 1x3xHxW tensor."""
    import torch

    x = (pixels.astype(np.float32) / np.float32(255.0) - np.float32(mean)) / np.float32(std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


def _features(model, pixel_values) -> np.ndarray:
    out = model.get_image_features(pixel_values=pixel_values)
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    return features[0].float().numpy()


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BICUBIC))


def _resize_report(model_dir: Path, model, original: np.ndarray, llama: np.ndarray, rows) -> dict[str, Any]:
    """mtmd's resize vs the transformers image processor, each on the original image."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir)
    pixel_values = processor(images=Image.fromarray(original), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = _features(model, pixel_values.float())
    return {"image_size": list(original.shape[1::-1]), **compare(llama, ref, rows)}


# --- ggml's approximations, reproduced in torch ------------------------------------------------------

def ggml_gelu(x):
    """ggml_vec_gelu_f32 with GGML_GELU_FP16: fp16 table of the tanh GELU, exact outside [-10, 10]."""
    import torch
    import torch.nn.functional as F

    table = F.gelu(x.half().float(), approximate="tanh").half().float()
    return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, table))


def ggml_gelu_quick(x):
    """ggml_vec_gelu_quick_f32 with GGML_GELU_QUICK_FP16: fp16 table of x * sigmoid(1.702 x)."""
    import torch

    h = x.half().float()
    return (h * torch.sigmoid(1.702 * h)).half().float()


def _as_module(fn):
    """An ``nn.Module`` calling ``fn`` (activations are registered submodules: only modules may replace them)."""
    import torch

    class Activation(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    return Activation()


@contextlib.contextmanager
def ggml_approximations(model, meta: dict[str, Any]):
    """Temporarily give the HF model's tower and projector ggml's activations and f16 patch conv."""
    import torch

    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower_act = ggml_gelu if meta.get("clip.use_gelu") else None if meta.get("clip.use_silu") else ggml_gelu_quick
    saved: list[tuple[Any, str, Any]] = [(projector, "act", projector.act)]
    projector.act = _as_module(ggml_gelu)
    for module in list(tower.modules()):
        if tower_act is not None and hasattr(module, "activation_fn") and hasattr(module, "fc1"):
            saved.append((module, "activation_fn", module.activation_fn))
            module.activation_fn = _as_module(tower_act)
        if module.__class__.__name__.endswith("VisionEmbeddings") and \
                meta["tensor_types"].get("v.patch_embd.weight") != "BF16":
            conv = module.patch_embedding
            weight16 = conv.weight.half().float()
            saved.append((conv, "forward", None))   # None: drop the instance attribute again
            conv.forward = lambda x, c=conv, w=weight16: torch.nn.functional.conv2d(
                x.half().float(), w, c.bias, stride=c.stride)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            if value is None:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
