"""``vlmkit eval perplexity MODEL --data text.txt``: perplexity with llama-perplexity's chunking.

The chunks and scored positions of :mod:`vlmkit.eval.compare` (``ctx``-token windows from an empty cache,
BOS first when the tokenizer adds one, the second half scored), so the number matches ``llama-perplexity -f``
on a GGUF; PPL ± its uncertainty as llama-perplexity's "Final estimate".
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vlmkit.eval.compare import DEFAULT_CTX, chunks, read_text, scored_half
from vlmkit.metrics.logits import log_softmax
from vlmkit.metrics.kld import perplexity as ppl_of


@dataclass
class PerplexityResult:
    model: str
    data: str
    ctx: int
    n_chunks: int
    n_tokens: int
    ppl: float
    ppl_unc: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_nll(backend: Any, text: str, ctx: int = DEFAULT_CTX) -> tuple[np.ndarray, int]:
    """Negative log-likelihood of every scored token, and the number of chunks."""
    rows, nll, n = scored_half(ctx), [], 0
    for chunk in chunks(backend.tokenize(text, True), ctx, backend.bos_to_add()):
        logp = log_softmax(backend.logits(chunk)[rows])
        targets = np.array(chunk[rows.start + 1:ctx])
        nll.append(-logp[np.arange(len(targets)), targets])
        n += 1
    return np.concatenate(nll), n


def perplexity(model: str | os.PathLike, data: str | os.PathLike = "corpus", ctx: int = DEFAULT_CTX,
               backend: str = "auto", threads: int | None = None, verbose: bool = False,
               download: bool = False) -> PerplexityResult:
    from vlmkit.eval.compare import open_model

    loaded = open_model(model, backend, threads, verbose, download)
    try:
        nll, n = token_nll(loaded, read_text(data), ctx)
    finally:
        loaded.close()
    ppl, unc = ppl_of(nll)
    return PerplexityResult(str(model), str(data), ctx, n, len(nll), ppl, unc)
