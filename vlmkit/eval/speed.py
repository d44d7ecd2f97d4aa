"""``vlmkit eval speed MODEL [--image]``: how fast a model answers on this machine, median of N runs.

Per run, through the same generation path as ``vlmkit run`` (``vlmkit.runtime.session``): time to first
token (prompt preparation, image encoding and prefill), prefill tokens/s (prompt tokens / time to first
token), decode tokens/s (tokens after the first / time after the first) and, with an image, the vision
tower's encode time on its own (``Backend.image_embeddings``). Peak RSS is the process's high-water mark.
One warm-up run is not counted (first-call allocations, lazy kernel setup).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

PROMPT = "Describe the picture in detail."
TEXT_PROMPT = "Write a short story about a red square and a blue circle."


@dataclass
class SpeedResult:
    model: str
    backend: str
    runs: int
    prompt_tokens: int
    new_tokens: int
    time_to_first_token_ms: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float | None  # None: the model stopped before a second token (no decode interval)
    image_encode_ms: float | None  # None: no image, or a backend that does not expose its tower (vLLM)
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(model: str | os.PathLike, image: Any = None, runs: int = 5, max_new_tokens: int = 32,
            backend: str = "auto", threads: int | None = None, verbose: bool = False,
            download: bool = False) -> SpeedResult:
    """Median over ``runs`` timed greedy generations; the decode rate counts the tokens actually produced
    (a model may stop at end-of-sequence before ``max_new_tokens``)."""
    from vlmkit.api import load
    from vlmkit.memory import peak_rss_mb
    from vlmkit.runtime.prompt import load_image

    runner = load(model, backend=backend, threads=threads, verbose=verbose, download=download)
    try:
        images = [load_image(image)] if image is not None else []
        prompt = PROMPT if images else TEXT_PROMPT
        results = [runner.generate(prompt, images=images, max_new_tokens=max_new_tokens) for _ in range(runs + 1)][1:]
        encode_ms = _encode_ms(runner.backend, images[0], runs) if images else None
    finally:
        runner.close()
    ttft = statistics.median(r.time_to_first_token_s for r in results)
    return SpeedResult(
        model=str(model), backend=runner.name, runs=runs, prompt_tokens=results[0].prompt_tokens,
        new_tokens=int(statistics.median(r.completion_tokens for r in results)),
        time_to_first_token_ms=round(1000 * ttft, 2),
        prefill_tokens_per_s=round(statistics.median(r.prompt_tokens / r.time_to_first_token_s for r in results), 1),
        decode_tokens_per_s=_median_rate([r.tokens_per_s for r in results]),
        image_encode_ms=encode_ms, peak_rss_mb=round(peak_rss_mb(), 1))


def _median_rate(rates: list[float | None]) -> float | None:
    measured = [r for r in rates if r is not None]
    return round(statistics.median(measured), 1) if measured else None


def _encode_ms(backend: Any, image: Any, runs: int) -> float | None:
    from vlmkit.errors import UnsupportedError

    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        try:
            backend.image_embeddings(image)
        except UnsupportedError:  # the tower runs inside the engine only: time to first token includes it
            return None
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times[1:]), 2)
