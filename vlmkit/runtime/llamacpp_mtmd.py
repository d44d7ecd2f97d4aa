"""Images on the llama.cpp backend through mtmd (llama.cpp's multimodal library).

Images reach mtmd as RGB bytes of the PIL image vlmkit already decoded (the same pixels the
transformers processor gets), not as a file name: mtmd's own decoder would be a second reader.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.runtime import llamacpp_native as native


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
        self.vocab = __import__("llama_cpp").llama_model_get_vocab(text_model)

    def _bitmap(self, image: Any) -> Any:
        data = image.convert("RGB").tobytes()
        array = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        bitmap = self.lib.mtmd_bitmap_init(image.width, image.height, array)
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
        return Chunks(chunks, lib.mtmd_helper_get_n_pos(chunks), self._seen(chunks, image_text))

    def _seen(self, chunks: Any, image_text: str) -> list[int]:
        """Text token ids, plus the image token id once per image (transformers' input_ids hold
        ``<image>`` ids, which its repetition penalty counts)."""
        lib, seen = self.lib, []
        image_ids = native.tokenize(self.vocab, image_text, False)
        for i in range(lib.mtmd_input_chunks_size(chunks)):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t(0)
                tokens = lib.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                seen += [tokens[j] for j in range(n.value)]
            elif len(image_ids) == 1:
                seen.append(image_ids[0])
        return seen

    def evaluate(self, chunks: Chunks, lctx: Any, n_batch: int) -> list[int]:
        import llama_cpp

        new_n_past = llama_cpp.llama_pos(0)
        try:
            status = self.lib.mtmd_helper_eval_chunks(self.ctx, lctx, chunks.handle, 0, 0, n_batch, True,
                                                      ctypes.byref(new_n_past))
        finally:
            self.lib.mtmd_input_chunks_free(chunks.handle)
        if status != 0:
            raise VlmkitError(self.path, f"mtmd could not evaluate the prompt ({status}): {native.last_error()}")
        return chunks.seen_tokens

    def close(self) -> None:
        if self.ctx:
            self.lib.mtmd_free(self.ctx)
            self.ctx = None
