"""Image embeddings from llama.cpp's multimodal library (mtmd) through llama-cpp-python's ctypes bindings.

Why not ``llama_cpp.Llama`` with a chat handler: those run the whole prompt and never hand back the image
embedding matrix, which is what a parity check compares. ``MtmdEncoder.encode`` returns exactly what mtmd
feeds the language model for one image: ``[n_tokens, n_embd]`` float32. The text model is optional: mtmd
uses it only to check ``n_embd`` and to tokenize text.

Pixels: mtmd resizes every image its own way (LLaVA: letterbox to a square, then its own bicubic), which
is not what the checkpoint's image processor does (SigLIP: stretch to the square; CLIP: shortest edge,
then centre crop), so a 4:3 photo gave other answers than transformers. For mmprojs that carry the
processor's config (``vlmkit.mmproj.image_processor``, written by ``vlmkit convert``), ``ModelPixels`` runs
that very processor (transformers' class, same resample filter) with rescale and normalize off, and mtmd
gets its uint8 output at the model's input size, where mtmd's own resize is the identity.

    with MtmdEncoder("out/mmproj.gguf", "out/model.gguf") as enc:
        emb = enc.encode(Image.open("cat.png"))
"""

from __future__ import annotations

import ctypes
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import VlmkitError


def _stub_text_model(encoder: MtmdEncoder):
    """A vocabulary-only stand-in text model (llama architecture, no tokenizer) for an mmproj alone.

    Why: llama.cpp 0.3.36's ``mtmd_context`` sets its position layout (``pos_type``) only from a text
    model's RoPE type and leaves it uninitialised without one; a garbage value reads as HunyuanVL's
    layout (n + 3 rows per image) and aborts the process in ``clip_encode`` ("Output buffer size
    mismatch"), depending on heap contents. A plain-RoPE stub gives LLaVA's normal positions."""
    import tempfile

    import gguf

    with tempfile.TemporaryDirectory(prefix="vlmkit-mtmd-") as tmp:
        path = Path(tmp) / "stub.gguf"
        writer = gguf.GGUFWriter(path, arch="llama")
        writer.add_context_length(64)
        writer.add_embedding_length(64)
        writer.add_block_count(1)
        writer.add_feed_forward_length(64)
        writer.add_head_count(1)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_tokenizer_model("none")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        return encoder._load_text_model(path)


def _rgb_array(image) -> np.ndarray:
    """PIL image, path or HxWx3 uint8 array -> contiguous HxWx3 uint8 RGB."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        try:
            with Image.open(image) as img:
                image = img.convert("RGB")
        except OSError as error:
            raise VlmkitError(image, f"cannot read image: {error}") from None
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    array = np.ascontiguousarray(image, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise VlmkitError(None, f"image must be HxWx3 RGB, got shape {array.shape}")
    return array


class ModelPixels:
    """The checkpoint's image processor with rescale and normalize switched off: ``pixels(image)`` is the
    HxWx3 uint8 picture transformers would normalize (resized, cropped or padded as the processor says)."""

    def __init__(self, config: dict[str, Any]):
        from transformers import AutoImageProcessor

        from vlmkit.logs import quiet_transformers

        quiet_transformers()
        with tempfile.TemporaryDirectory(prefix="vlmkit-processor-") as tmp:
            Path(tmp, "preprocessor_config.json").write_text(json.dumps(config))
            self.processor = AutoImageProcessor.from_pretrained(tmp)

    def __call__(self, image: Any) -> np.ndarray:
        from PIL import Image

        picture = Image.fromarray(_rgb_array(image))
        out = self.processor(images=[picture], do_rescale=False, do_normalize=False, return_tensors="np")
        pixels = np.asarray(out["pixel_values"])[0]
        if pixels.ndim != 3:
            raise VlmkitError(None, f"the image processor gives {pixels.ndim}-d pixels per image (tiled "
                                    "images are not supported on the llama.cpp backend)")
        return np.ascontiguousarray(np.clip(np.rint(pixels.transpose(1, 2, 0)), 0, 255).astype(np.uint8))

    @classmethod
    def for_mmproj(cls, mmproj: Path) -> ModelPixels | None:
        """From the mmproj's ``vlmkit.mmproj.image_processor`` key; None for mmprojs without it."""
        import gguf

        from vlmkit.gguf_keys import KEY_IMAGE_PROCESSOR

        field = gguf.GGUFReader(mmproj).get_field(KEY_IMAGE_PROCESSOR)
        return cls(json.loads(str(field.contents()))) if field is not None else None


class MtmdEncoder:
    """An mtmd context on the CPU: ``encode(image) -> np.ndarray [n_tokens, n_embd]``."""

    def __init__(self, mmproj: str | Path, text_model: str | Path | None = None,
                 threads: int | None = None, flash_attn: bool | None = None, verbose: bool = False):
        from vlmkit.llamacpp.loading import llama_cpp_quiet

        self._llama = llama_cpp_quiet(verbose)  # also routes clip.cpp / mtmd's per-tensor log
        from llama_cpp import mtmd_cpp

        self._mtmd = mtmd_cpp
        self.mmproj = Path(mmproj)
        self._model = self._load_text_model(text_model) if text_model is not None else _stub_text_model(self)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.warmup = False
        params.n_threads = threads or min(4, os.cpu_count() or 1)
        if flash_attn is not None:   # default (auto) is on for the CPU: K and V are cast to f16
            params.flash_attn_type = (self._llama.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else self._llama.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(self.mmproj).encode(), self._model, params)
        if not self._ctx:
            self.close()
            raise VlmkitError(self.mmproj, "llama.cpp (mtmd) could not load this mmproj"
                                           + ("" if verbose else " (rerun with --verbose for its log)"))
        self.n_embd, self.rows = mmproj_layout(self.mmproj)
        self.pixels = ModelPixels.for_mmproj(self.mmproj)

    def _load_text_model(self, path: str | Path):
        from vlmkit.llamacpp.loading import load_model, model_params

        # mtmd reads n_embd and the vocabulary, never the weights
        return load_model(path, model_params(vocab_only=True))

    def encode(self, image, transformers_layout: bool = False) -> np.ndarray:
        """The embeddings mtmd gives the language model for ``image`` (copied out of mtmd's buffer).
        ``transformers_layout``: transformers' token rows where exact (see ``to_transformers_rows``)."""
        rows = self._encode(image)
        return to_transformers_rows(rows, *self.rows) if transformers_layout and self.rows else rows

    def _encode(self, image) -> np.ndarray:
        m = self._mtmd
        pixels = self.pixels(image) if self.pixels is not None else _rgb_array(image)
        height, width = pixels.shape[:2]
        data = pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        bitmap = m.mtmd_bitmap_init(width, height, data)
        chunks = m.mtmd_input_chunks_init()
        try:
            return encode_chunk(m, self._ctx, self._image_chunk(bitmap, chunks), self.n_embd, self.mmproj)
        finally:
            m.mtmd_input_chunks_free(chunks)
            m.mtmd_bitmap_free(bitmap)

    def _image_chunk(self, bitmap, chunks):
        """Tokenize a prompt made of the image alone (no text, no BOS): one image chunk."""
        m = self._mtmd
        part = m.mtmd_input_part(text=None, bitmap=bitmap)
        parts = (ctypes.POINTER(m.mtmd_input_part) * 1)(ctypes.pointer(part))
        if m.mtmd_tokenize_from_parts(self._ctx, chunks, parts, 1, False) != 0:
            raise VlmkitError(self.mmproj, "mtmd could not tokenize the image")
        for i in range(m.mtmd_input_chunks_size(chunks)):
            chunk = m.mtmd_input_chunks_get(chunks, i)
            if m.mtmd_input_chunk_get_type(chunk) == m.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                return chunk
        raise VlmkitError(self.mmproj, "mtmd produced no image chunk")

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._llama.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> "MtmdEncoder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def encode_chunk(mtmd, ctx, chunk, n_embd: int, path: Path | None = None) -> np.ndarray:
    """Encode one mtmd image chunk: mtmd's rows for it, ``[n_tokens, n_embd]`` float32, copied out of
    mtmd's buffer (the next encode overwrites it). Shared by ``MtmdEncoder`` and the run backend."""
    n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
    if mtmd.mtmd_encode_chunk(ctx, chunk) != 0:
        raise VlmkitError(path, "mtmd failed to encode the image")
    out = mtmd.mtmd_get_output_embd(ctx)
    return np.ctypeslib.as_array(out, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()


def mmproj_layout(mmproj: Path) -> tuple[int, tuple[list[int], list[int]] | None]:
    """mtmd's output width (``clip.vision.projection_dim``: mtmd has no getter) and, for vlmkit's
    mmproj files, which of its rows equal which transformers rows. Read with gguf-py."""
    import gguf

    from vlmkit.gguf_keys import KEY_HF_ROWS, KEY_LLAMACPP_ROWS

    reader = gguf.GGUFReader(mmproj)
    field = reader.get_field(gguf.Keys.ClipVision.PROJECTION_DIM)
    if field is None:
        raise VlmkitError(mmproj, f"no {gguf.Keys.ClipVision.PROJECTION_DIM} key")
    ours, theirs = reader.get_field(KEY_LLAMACPP_ROWS), reader.get_field(KEY_HF_ROWS)
    rows = (list(ours.contents()), list(theirs.contents())) if ours and theirs else None
    return int(field.contents()), rows


def to_transformers_rows(rows: np.ndarray, llamacpp_rows: list[int], hf_rows: list[int]) -> np.ndarray:
    """mtmd's rows as transformers' image tokens, where that is exact: SigLIP + "default" drops mtmd's
    first row (patch 0), giving transformers' N - 1 tokens. When transformers has a token mtmd never
    computes (CLIP: patch 0, llama.cpp #25814) the rows are returned as mtmd orders them: moving the CLS
    row into patch 0's place measured no better on the replicas (logit max |diff| 2.4 vs 1.2)."""
    (a0, a1), (b0, _) = llamacpp_rows, hf_rows
    return rows[a0:a1] if b0 == 0 else rows


def decode_image(lctx, embeddings: np.ndarray, n_past: int, n_batch: int = 512, seq_id: int = 0,
                 logits_last: bool = False) -> int:
    """Feed image-embedding rows into a llama.cpp context at positions ``n_past..``; returns the new n_past.

    What ``mtmd_helper_decode_image_chunk`` does for LLaVA (plain positions, causal), but with rows the
    caller chose: ``encode(image, transformers_layout=True)`` gives transformers' token count and order
    (SigLIP "default": N - 1 rows), which mtmd's own helper cannot."""
    import llama_cpp

    rows = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, width = rows.shape
    for start in range(0, n, n_batch):
        count = min(n_batch, n - start)
        batch = llama_cpp.llama_batch_init(count, width, 1)
        try:
            batch.n_tokens = count
            ctypes.memmove(batch.embd, rows[start:start + count].ctypes.data, rows[start:start + count].nbytes)
            for i in range(count):
                batch.pos[i] = n_past + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = logits_last and start + i == n - 1
            status = llama_cpp.llama_decode(lctx, batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        if status != 0:
            raise VlmkitError(None, f"llama.cpp could not decode the image embeddings ({status})")
    return n_past + n


def encode_image(mmproj: str | Path, image, text_model: str | Path | None = None,
                 flash_attn: bool | None = None, verbose: bool = False) -> np.ndarray:
    """One-shot ``MtmdEncoder(...).encode(image)``."""
    with MtmdEncoder(mmproj, text_model, flash_attn=flash_attn, verbose=verbose) as encoder:
        return encoder.encode(image)
