"""Images on the llama.cpp backend through mtmd (llama.cpp's multimodal library).

Images reach mtmd as RGB bytes of the PIL image vlmkit already decoded, not as a file name: mtmd's own
decoder would be a second reader. For mmprojs written by ``vlmkit convert`` those bytes are first resized /
cropped / padded by the checkpoint's own image processor (``vlmkit.llamacpp.mtmd.ModelPixels``), so a 4:3 photo
becomes the pixels transformers sees and mtmd's own resize is the identity.

For mmprojs written by ``vlmkit convert`` (they declare which mtmd rows equal which transformers rows),
image chunks are encoded by mtmd but fed to the text model as transformers' rows (SigLIP + "default"
feature select: transformers drops patch 0, mtmd keeps it) with ``vlmkit.llamacpp.mtmd``'s
``to_transformers_rows`` / ``decode_image``, the same code ``vlmkit convert --verify`` checks; other
mmprojs go through mtmd's own ``mtmd_helper_eval_chunks``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.llamacpp import native


@dataclass
class Chunks:
    """A tokenized multimodal prompt (owns the native chunk list and its bitmaps)."""

    handle: Any
    n_positions: int
    seen_tokens: list[int]


class Mtmd:
    """An mtmd context for one mmproj.gguf, tied to the text model it feeds."""

    def __init__(self, mmproj: Path, text_model: Any, use_gpu: bool, threads: int):
        from llama_cpp import mtmd_cpp

        self.lib, self.path = mtmd_cpp, Path(mmproj)
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.warmup = False
        if threads:
            params.n_threads = threads
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(self.path).encode(), text_model, params)
        if not self.ctx:
            raise UnsupportedError(self.path, f"mtmd cannot load this mmproj: {native.last_error()}")
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            raise UnsupportedError(self.path, "this mmproj has no vision encoder")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        llama_cpp = __import__("llama_cpp")
        self.vocab = llama_cpp.llama_model_get_vocab(text_model)
        self.n_embd = llama_cpp.llama_model_n_embd(text_model)
        self.rows = _rows_map(self.path)
        from vlmkit.llamacpp.mtmd import ModelPixels

        self.pixels = ModelPixels.for_mmproj(self.path)

    def _image_rows(self, n: int) -> int:
        """How many rows an image chunk of ``n`` mtmd tokens feeds the text model."""
        if self.rows is None:
            return n
        from vlmkit.llamacpp.mtmd import to_transformers_rows

        return len(to_transformers_rows(np.arange(n), *self.rows))

    def _bitmap(self, image: Any) -> Any:
        pixels = self.pixels(image) if self.pixels is not None else np.asarray(image.convert("RGB"))
        height, width = pixels.shape[:2]
        data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        array = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bitmap = self.lib.mtmd_bitmap_init(width, height, array)
        if not bitmap:
            raise VlmkitError(None, "mtmd could not take the image")
        return bitmap

    def tokenize(self, text: str, images: Sequence[Any], add_special: bool, image_text: str) -> Chunks:
        lib = self.lib
        if text.count(self.marker) != len(images):
            raise VlmkitError(None, f"the prompt has {text.count(self.marker)} image places for {len(images)} images")
        bitmaps = [self._bitmap(image) for image in images]
        try:
            array = (lib.mtmd_bitmap_p_ctypes * max(len(bitmaps), 1))(*bitmaps)
            data = text.encode("utf-8")
            inp = lib.mtmd_input_text(data, len(data), add_special, True)
            chunks = lib.mtmd_input_chunks_init()
            status = lib.mtmd_tokenize(self.ctx, chunks, ctypes.byref(inp), array, len(bitmaps))
            if status != 0:
                lib.mtmd_input_chunks_free(chunks)
                raise VlmkitError(None, f"mtmd could not tokenize the prompt ({status}): {native.last_error()}")
        finally:
            for bitmap in bitmaps:
                lib.mtmd_bitmap_free(bitmap)
        dropped = sum(n - self._image_rows(n) for n in self._image_sizes(chunks))
        return Chunks(chunks, lib.mtmd_helper_get_n_pos(chunks) - dropped, self._seen(chunks, image_text))

    def _image_sizes(self, chunks: Any) -> list[int]:
        lib = self.lib
        return [lib.mtmd_input_chunk_get_n_tokens(chunk) for chunk in self._chunks(chunks)
                if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_IMAGE]

    def _chunks(self, chunks: Any) -> list[Any]:
        return [self.lib.mtmd_input_chunks_get(chunks, i) for i in range(self.lib.mtmd_input_chunks_size(chunks))]

    def _seen(self, chunks: Any, image_text: str) -> list[int]:
        """Text token ids, plus the image token id once per image (transformers' input_ids hold
        ``<image>`` ids, which its repetition penalty counts)."""
        lib, seen = self.lib, []
        image_ids = native.tokenize(self.vocab, image_text, False)
        for chunk in self._chunks(chunks):
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                seen += self._text_tokens(chunk)
            elif len(image_ids) == 1:
                seen.append(image_ids[0])
        return seen

    def _text_tokens(self, chunk: Any) -> list[int]:
        n = ctypes.c_size_t(0)
        tokens = self.lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
        return [tokens[j] for j in range(n.value)]

    def evaluate(self, chunks: Chunks, lctx: Any, n_batch: int) -> list[int]:
        """Fill ``lctx`` (cleared) with the prompt; logits are kept for its last position."""
        try:
            if self.rows is None:
                self._evaluate_mtmd(chunks, lctx, n_batch)
            else:
                self._evaluate_rows(chunks, lctx, n_batch)
        finally:
            self.lib.mtmd_input_chunks_free(chunks.handle)
        return chunks.seen_tokens

    def _evaluate_mtmd(self, chunks: Chunks, lctx: Any, n_batch: int) -> None:
        import llama_cpp

        new_n_past = llama_cpp.llama_pos(0)
        status = self.lib.mtmd_helper_eval_chunks(self.ctx, lctx, chunks.handle, 0, 0, n_batch, True,
                                                  ctypes.byref(new_n_past))
        if status != 0:
            raise VlmkitError(self.path, f"mtmd could not evaluate the prompt ({status}): {native.last_error()}")

    def _evaluate_rows(self, chunks: Chunks, lctx: Any, n_batch: int) -> int:
        """Text chunks as tokens, image chunks as transformers' rows of mtmd's embeddings (LLaVA-style
        models only: plain positions, causal attention); returns the positions filled."""
        from vlmkit.llamacpp.mtmd import decode_image, encode_chunk, to_transformers_rows

        lib, n_past, parts = self.lib, 0, self._chunks(chunks.handle)
        for i, chunk in enumerate(parts):
            last = i == len(parts) - 1
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                tokens = self._text_tokens(chunk)
                native.decode_tokens(lctx, tokens, n_batch)  # positions follow the KV cache
                n_past += len(tokens)
            else:
                rows = to_transformers_rows(encode_chunk(lib, self.ctx, chunk, self.n_embd, self.path), *self.rows)
                n_past = decode_image(lctx, rows, n_past, n_batch, logits_last=last)
        return n_past

    def close(self) -> None:
        if self.ctx:
            self.lib.mtmd_free(self.ctx)
            self.ctx = None


def _rows_map(mmproj: Path) -> tuple[list[int], list[int]] | None:
    """The mmproj's declared mtmd-row -> transformers-row map (``vlmkit convert`` writes it), or None."""
    from vlmkit.llamacpp.mtmd import mmproj_layout

    try:
        return mmproj_layout(mmproj)[1]
    except VlmkitError:  # not one of ours: no projection_dim key to read
        return None
