"""llama.cpp's multimodal library (mtmd) behind one class, through llama-cpp-python's ctypes bindings.

``Mtmd`` is an mtmd context for one mmproj.gguf, tied to the text model it feeds: it tokenizes prompts with
images and evaluates them for the run backend (``vlmkit.runtime.llamacpp_backend``), and ``encode_image``
returns exactly what mtmd feeds the language model for one image, ``[n_tokens, n_embd]`` float32 (the
teacher-forced logits, ``Backend.image_embeddings`` and the parity check all read that one method).
``MtmdEncoder`` is an ``Mtmd`` with its own vocabulary-only text model (or a stub), for checks that have an
mmproj and no run backend. Why not ``llama_cpp.Llama`` with a chat handler: those run the whole prompt and
never hand back the image embedding matrix, which is what a parity check compares.

Images reach mtmd as RGB bytes of a PIL image (or array) vlmkit already decoded, never as a file name: files
are opened by ``vlmkit.runtime.prompt.load_image`` only, and resized as the checkpoint's image processor
resizes them (``vlmkit.llamacpp.pixels``) when the mmproj carries that processor's config.

For mmprojs written by ``vlmkit convert`` (they declare which mtmd rows equal which transformers rows),
image chunks are encoded by mtmd but fed to the text model as transformers' rows (SigLIP + "default"
feature select: transformers drops patch 0, mtmd keeps it) with ``to_transformers_rows`` / ``decode_image``;
other mmprojs go through mtmd's own ``mtmd_helper_eval_chunks``.

    with MtmdEncoder("out/mmproj.gguf", "out/model.gguf") as enc:
        emb = enc.encode(load_image("cat.png"))
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.llamacpp import native
from vlmkit.llamacpp.pixels import ModelPixels, rgb_pixels


def _stub_text_model():
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
        return _vocab_only(path)


def _vocab_only(path: str | Path):
    """A text model as mtmd needs it: n_embd and the vocabulary, never the weights."""
    from vlmkit.llamacpp.loading import load_model, model_params

    return load_model(path, model_params(vocab_only=True))


@dataclass
class Chunks:
    """A tokenized multimodal prompt (owns the native chunk list and its bitmaps)."""

    handle: Any
    n_positions: int
    seen_tokens: list[int]


class Mtmd:
    """An mtmd context for one mmproj.gguf, tied to the text model it feeds."""

    def __init__(self, mmproj: Path, text_model: Any, use_gpu: bool = False, threads: int | None = None,
                 flash_attn: bool | None = None, n_embd: int | None = None):
        """``flash_attn``: None = mtmd's default (auto: on for the CPU, K and V cast to f16); ``n_embd``: the
        width of mtmd's output rows when ``text_model`` is not the real one (default: the text model's)."""
        import llama_cpp
        from llama_cpp import mtmd_cpp

        self.lib, self.path, self.ctx = mtmd_cpp, Path(mmproj), None
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.print_timings = False
        params.warmup = False
        if threads:
            params.n_threads = threads
        if flash_attn is not None:
            params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self.ctx = mtmd_cpp.mtmd_init_from_file(str(self.path).encode(), text_model, params)
        if not self.ctx:
            raise UnsupportedError(self.path, f"mtmd cannot load this mmproj: {native.last_error()}")
        if not mtmd_cpp.mtmd_support_vision(self.ctx):
            raise UnsupportedError(self.path, "this mmproj has no vision encoder")
        self.marker = mtmd_cpp.mtmd_default_marker().decode()
        self.vocab = llama_cpp.llama_model_get_vocab(text_model)
        self.n_embd = n_embd or llama_cpp.llama_model_n_embd(text_model)
        self.rows = _rows_map(self.path)
        self.pixels = ModelPixels.for_mmproj(self.path)

    def _image_rows(self, n: int) -> int:
        """How many rows an image chunk of ``n`` mtmd tokens feeds the text model."""
        if self.rows is None:
            return n
        return len(to_transformers_rows(np.arange(n), *self.rows))

    def _bitmap(self, image: Any) -> Any:
        pixels = self.pixels(image) if self.pixels is not None else rgb_pixels(image)
        height, width = pixels.shape[:2]
        data = pixels.tobytes()
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

    def encode_image(self, image: Any, transformers_layout: bool = True) -> np.ndarray:
        """What mtmd feeds the text model for ``image``: ``[rows, n_embd]`` float32, as transformers' rows
        where exact (``transformers_layout``, what the run backend feeds) or mtmd's own."""
        lib = self.lib
        bitmap, chunks = self._bitmap(image), lib.mtmd_input_chunks_init()
        try:
            rows = encode_chunk(lib, self.ctx, self._image_chunk(bitmap, chunks), self.n_embd, self.path)
        finally:
            lib.mtmd_input_chunks_free(chunks)
            lib.mtmd_bitmap_free(bitmap)
        return to_transformers_rows(rows, *self.rows) if transformers_layout and self.rows else rows

    def _image_chunk(self, bitmap: Any, chunks: Any) -> Any:
        """Tokenize a prompt made of the image alone (no text, no BOS) into ``chunks``: its image chunk."""
        lib = self.lib
        part = lib.mtmd_input_part(text=None, bitmap=bitmap)
        parts = (ctypes.POINTER(lib.mtmd_input_part) * 1)(ctypes.pointer(part))
        if lib.mtmd_tokenize_from_parts(self.ctx, chunks, parts, 1, False) != 0:
            raise VlmkitError(self.path, f"mtmd could not tokenize the image: {native.last_error()}")
        for chunk in self._chunks(chunks):
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                return chunk
        raise VlmkitError(self.path, "mtmd produced no image chunk")

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


class MtmdEncoder:
    """An ``Mtmd`` on the CPU with its own text model (``text_model``'s vocabulary, or a stub when None):
    ``encode(image) -> np.ndarray [n_tokens, n_embd]``."""

    def __init__(self, mmproj: str | Path, text_model: str | Path | None = None,
                 threads: int | None = None, flash_attn: bool | None = None, verbose: bool = False):
        from vlmkit.llamacpp.loading import llama_cpp_quiet

        self._llama = llama_cpp_quiet(verbose)  # also routes clip.cpp / mtmd's per-tensor log
        self.mmproj = Path(mmproj)
        self._model = _vocab_only(text_model) if text_model is not None else _stub_text_model()
        try:  # a vocabulary-only or stub model has no real n_embd: the mmproj gives mtmd's output width
            self.mtmd = Mtmd(self.mmproj, self._model, use_gpu=False, threads=threads or min(4, os.cpu_count() or 1),
                             flash_attn=flash_attn, n_embd=mmproj_layout(self.mmproj)[0])
        except Exception:
            self.close()
            raise
        self.n_embd, self.rows = self.mtmd.n_embd, self.mtmd.rows

    def encode(self, image, transformers_layout: bool = False) -> np.ndarray:
        """The embeddings mtmd gives the language model for ``image`` (copied out of mtmd's buffer).
        ``transformers_layout``: transformers' token rows where exact (see ``to_transformers_rows``)."""
        return self.mtmd.encode_image(image, transformers_layout)

    def close(self) -> None:
        if getattr(self, "mtmd", None) is not None:
            self.mtmd.close()
            self.mtmd = None
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
    mtmd's buffer (the next encode overwrites it)."""
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


def _rows_map(mmproj: Path) -> tuple[list[int], list[int]] | None:
    """The mmproj's declared mtmd-row -> transformers-row map (``vlmkit convert`` writes it), or None."""
    try:
        return mmproj_layout(mmproj)[1]
    except VlmkitError:  # not one of ours: no projection_dim key to read
        return None
