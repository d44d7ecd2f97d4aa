"""Token ids -> streamed text, stop strings, timing and memory: the layer above both backends.

Kept out of the backends so ``--stop``, token counts and tokens/s mean the same on each. Stop
strings are matched on decoded text (as transformers' ``stop_strings`` do), and text that could
still become a stop string is held back from the stream until it is decided.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from vlmkit.memory import peak_rss_mb
from vlmkit.runtime.base import Backend, GenerationResult, Message, SamplingParams


class StopTextStream:
    """Incremental detokenizer with stop strings.

    Decoding the whole id list each step (instead of per token) keeps multi-byte characters and
    sentencepiece spaces right; a trailing U+FFFD means an incomplete UTF-8 sequence and is held.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str]):
        self.decode, self.stop = decode, tuple(stop)
        self.ids: list[int] = []
        self.emitted = 0
        self.text = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the newly safe text (and set ``stopped`` on a stop string)."""
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self.text = True, text[:cut]
            return self._emit(cut)
        self.text = text
        safe = len(text.rstrip("\ufffd"))
        safe -= max((n for s in self.stop for n in range(1, len(s)) if text[:safe].endswith(s[:n])), default=0)
        return self._emit(safe)

    def finish(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        piece = self.text[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece


def run_generation(backend: Backend, messages: Sequence[Message], images: Sequence[Any],
                   params: SamplingParams) -> Generator[str, None, GenerationResult]:
    """Yield text pieces as they are decoded; the generator's return value is the GenerationResult."""
    start = time.perf_counter()
    prompt = backend.prepare(messages, images)
    stream = StopTextStream(backend.decode, params.stop)
    first = end = None
    ids = backend.generate_ids(prompt, params)
    try:
        for token in ids:
            first = first or time.perf_counter()
            piece = stream.push(token)
            if piece:
                yield piece
            if stream.stopped:
                break
    finally:
        ids.close()
    end = time.perf_counter()
    tail = stream.finish()
    if tail:
        yield tail
    return _result(backend, prompt.n_tokens, stream, params, start, first, end)


def _result(backend: Backend, n_prompt: int, stream: StopTextStream, params: SamplingParams,
            start: float, first: float | None, end: float) -> GenerationResult:
    n = len(stream.ids)
    if stream.stopped:
        reason = "stop"
    else:
        reason = "length" if n >= min(params.max_new_tokens, backend.n_ctx - n_prompt) else "eos"
    decode_s = end - first if first else 0.0
    return GenerationResult(
        text=stream.text, prompt_tokens=n_prompt, completion_tokens=n,
        time_to_first_token_s=round((first or end) - start, 4),
        tokens_per_s=round((n - 1) / decode_s, 2) if n > 1 and decode_s > 0 else None,
        total_s=round(end - start, 4), peak_rss_mb=round(peak_rss_mb(), 1), finish_reason=reason,
        backend=backend.name, token_ids=list(stream.ids))
