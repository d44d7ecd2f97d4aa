"""Teacher-forced logits on the llama.cpp backend: every position's next-token logits in one pass.

What ``llama-perplexity`` does (a batch with an output flag on every scored token), with images fed as the
same embedding rows the run backend feeds (``Mtmd.encode_image`` + ``decode_image``: transformers' row layout for
mmprojs written by ``vlmkit convert``), so a comparison scores what ``vlmkit run`` computes. Only LLaVA-style
models (plain positions, causal attention over image rows) are handled, as in the run backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.llamacpp.loading import bindings
from vlmkit.runtime.base import IMAGE


def decode_all(ctx: Any, tokens: Sequence[int], n_past: int, n_batch: int, n_vocab: int) -> np.ndarray:
    """Evaluate ``tokens`` at positions ``n_past..``; the logits of every one, ``[len(tokens), n_vocab]``."""
    llama_cpp = bindings()

    out = []
    for start in range(0, len(tokens), n_batch):
        chunk = list(tokens[start:start + n_batch])
        batch = llama_cpp.llama_batch_init(len(chunk), 0, 1)
        try:
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = n_past + start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            status = llama_cpp.llama_decode(ctx, batch)
            if status != 0:
                raise VlmkitError(None, f"llama.cpp could not evaluate the tokens (llama_decode {status})")
            pointer = llama_cpp.llama_get_logits(ctx)
            out.append(np.ctypeslib.as_array(pointer, shape=(len(chunk) * n_vocab,)).reshape(len(chunk), n_vocab).copy())
        finally:
            llama_cpp.llama_batch_free(batch)
    return np.concatenate(out) if out else np.zeros((0, n_vocab), np.float32)


def teacher_forced(backend: Any, token_ids: Sequence[int], images: Sequence[Any]) -> np.ndarray:
    """``Backend.logits`` for ``LlamaCppBackend`` (see ``vlmkit.runtime.base.Backend.logits``)."""
    llama_cpp = bindings()

    from vlmkit.llamacpp.mtmd import decode_image

    ids = list(token_ids)
    if ids.count(IMAGE) != len(images):
        raise VlmkitError(None, f"{ids.count(IMAGE)} image places in the token ids for {len(images)} images")
    if images and backend.mtmd is None:
        raise UnsupportedError(backend.path, "images need the model's mmproj.gguf beside it")
    if len(ids) >= backend.n_ctx:
        raise VlmkitError(None, f"{len(ids)} tokens do not fit the context of {backend.n_ctx}")
    backend.context_for(backend.n_ctx if images else len(ids))   # an image's rows are known only once encoded
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(backend.ctx), True)
    pending, out, n_past, queue = [], [], 0, list(images)
    for token in [*ids, None]:
        if token is not None and token != IMAGE:
            pending.append(token)
            continue
        if pending:
            out.append(decode_all(backend.ctx, pending, n_past, backend.n_batch, backend.n_vocab))
            n_past, pending = n_past + len(pending), []
        if token == IMAGE:
            n_past = decode_image(backend.ctx, backend.mtmd.encode_image(queue.pop(0)), n_past, backend.n_batch)
    return np.concatenate(out) if out else np.zeros((0, backend.n_vocab), np.float32)


def encode(backend: Any, messages: Sequence[Any], images: Sequence[Any]) -> list[int]:
    """The prompt ``backend.prepare`` builds, as token ids with one ``IMAGE`` per image."""
    prompt = backend.prepare(messages, images)
    if isinstance(prompt.payload, list):
        return list(prompt.payload)
    mtmd, ids = backend.mtmd, []
    try:
        for chunk in mtmd._chunks(prompt.payload.handle):
            if mtmd.lib.mtmd_input_chunk_get_type(chunk) == mtmd.lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
                ids += mtmd._text_tokens(chunk)
            else:
                ids.append(IMAGE)
    finally:
        mtmd.lib.mtmd_input_chunks_free(prompt.payload.handle)
    return ids


def bos_to_add(backend: Any) -> int | None:
    llama_cpp = bindings()

    if not llama_cpp.llama_vocab_get_add_bos(backend.vocab):
        return None
    return int(llama_cpp.llama_vocab_bos(backend.vocab))



def special_ids(backend: Any) -> dict[str, int | None]:
    llama_cpp = bindings()

    ids = {"bos": llama_cpp.llama_vocab_bos(backend.vocab), "eos": llama_cpp.llama_vocab_eos(backend.vocab)}
    return {name: int(value) if value >= 0 else None for name, value in ids.items()}
