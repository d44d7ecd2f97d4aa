"""Thin helpers over llama-cpp-python's C bindings (``llama_cpp.llama_cpp`` / ``mtmd_cpp``).

We call the C API rather than the high-level ``llama_cpp.Llama`` class because we need control it
does not expose: our own sampler chain order (to match transformers), accepting the prompt into the
repetition-penalty window, and evaluating mtmd image chunks into the same context.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from vlmkit.llamacpp.loading import install_log, last_error  # noqa: F401  (the one llama.cpp log route)


def kv_overrides(values: dict[str, bool]) -> Any:
    """A NUL-terminated ``llama_model_kv_override`` array (booleans only: all we need)."""
    import llama_cpp

    array = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for i, (key, value) in enumerate(values.items()):
        array[i].key = key.encode()
        array[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL
        array[i].value.val_bool = value
    array[len(values)].key = b"\0"
    return array


def starts_with_special(vocab: Any, text: str) -> bool:
    """Whether ``text`` opens with a special-token string (parsing specials changes the first token)."""
    parsed, raw = tokenize(vocab, text, False), tokenize(vocab, text, False, parse_special=False)
    return bool(parsed) and bool(raw) and parsed[0] != raw[0]


def meta_str(model: Any, key: str) -> str | None:
    import llama_cpp

    size = 1 << 16
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, size)
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", "replace")
        size = n + 1


def token_text(vocab: Any, token: int) -> str | None:
    import llama_cpp

    if token < 0:
        return None
    raw = llama_cpp.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", "replace") if raw is not None else None


def tokenize(vocab: Any, text: str, add_special: bool, parse_special: bool = True) -> list[int]:
    import llama_cpp

    data = text.encode("utf-8")
    size = len(data) + 8
    tokens = (llama_cpp.llama_token * size)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, size, add_special, parse_special)
    if n < 0:
        tokens = (llama_cpp.llama_token * -n)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, -n, add_special, parse_special)
    return list(tokens[:n])


def detokenize(vocab: Any, ids: Sequence[int]) -> str:
    """Text of ``ids`` with control tokens dropped (transformers' ``skip_special_tokens=True``)."""
    import llama_cpp

    array = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 16 * len(ids) + 16
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, array, len(ids), buf, size, False, False)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", "replace")
        size = -n + 1


def decode_tokens(ctx: Any, tokens: Sequence[int], n_batch: int) -> None:
    """Evaluate ``tokens`` in chunks of ``n_batch``; logits are kept for the last one only."""
    import llama_cpp

    for start in range(0, len(tokens), n_batch):
        chunk = tokens[start:start + n_batch]
        array = (llama_cpp.llama_token * len(chunk))(*chunk)
        status = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(chunk)))
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status}): {last_error()}")


def sampler_chain(n_vocab: int, n_ctx: int, params: Any) -> Any:
    """The sampler chain in transformers' order: penalty -> temperature -> top-k -> top-p -> draw.

    transformers' RepetitionPenaltyLogitsProcessor is llama.cpp's penalties sampler with frequency
    and presence 0 over the whole context; greedy (temperature 0) is penalty -> argmax."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if params.repetition_penalty != 1.0:
        add(llama_cpp.llama_sampler_init_penalties(n_vocab, n_ctx, params.repetition_penalty, 0.0, 0.0))
    if params.greedy:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain
    if params.temperature != 1.0:
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
    if params.top_k > 0:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
    add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
