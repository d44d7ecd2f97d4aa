"""lm-evaluation-harness model ``vlmkit``: any vlmkit model on any backend (transformers, llama.cpp ...).

    vlmkit eval lm-eval --model vlmkit --model_args model=out/q4/,backend=llamacpp --tasks ...
    import vlmkit.eval.lm_eval_model; lm_eval.simple_evaluate(model="vlmkit", model_args="model=demo", ...)

lm-eval 0.4.13 finds models in its own registry only: ``lm_eval.models.MODEL_MAPPING`` is a fixed table, the
registry reads no entry points, and neither ``--include_path`` (task YAMLs), ``--config`` nor an environment
variable imports a third-party module before the model is looked up, so a plain ``lm_eval --model vlmkit``
cannot see it. This module registers ``vlmkit`` on import (``register_model``), and ``vlmkit eval lm-eval ARGS``
(or ``python -m vlmkit.eval.lm_eval_model ARGS``) is lm-eval's own command line, ARGS untouched, with it
registered. Requests are scored the way lm-eval's ``HFLM`` scores them (context + continuation encoded whole, the
continuation being the tokens after the context's; rolling windows with a BOS-or-EOS prefix token), on the
backends' teacher-forced ``logits``; ``generate_until`` is greedy through the backend's ``generate_ids``.
"""

from __future__ import annotations

import sys
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval fills its registry only when empty: keep its own models there)
import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from vlmkit.metrics.logits import log_softmax
from vlmkit.runtime.base import SamplingParams
from vlmkit.runtime.session import StopTextStream


@register_model("vlmkit")
class VlmkitLM(LM):
    """``model_args``: ``model`` (path, hub id, demo, zoo:<name>), ``backend`` (auto), ``threads``, ``max_length``."""

    def __init__(self, model: str = "demo", backend: str = "auto", threads: int | None = None,
                 max_length: int | None = None, verbose: bool = False, **_ignored: Any):
        super().__init__()
        from vlmkit.api import load

        self.runner = load(model, backend=backend, threads=int(threads) if threads else None, verbose=verbose)
        self.backend = self.runner.backend
        self.max_length = int(max_length or min(self.backend.n_ctx, 2048))
        special = self.backend.special_ids()
        self.prefix_token = special["bos"] if special["bos"] is not None else special["eos"]

    # --- scoring ------------------------------------------------------------------------------------------

    def _continuation_logprob(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        ids = (context + continuation)[-(self.max_length + 1):]
        rows = log_softmax(self.backend.logits(ids[:-1])[-len(continuation):])
        picked = rows[np.arange(len(continuation)), continuation]
        return float(picked.sum()), bool((rows.argmax(-1) == np.array(continuation)).all())

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """HFLM's rule: trailing spaces of the context move to the continuation; the continuation's tokens
        are those of the whole text after the context's (tokenizers merge across the boundary)."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.backend.tokenize(context + continuation, False)
        head = self.backend.tokenize(context, False)
        return head, whole[len(head):]

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for request in requests:
            context, continuation = request.args
            if context:
                ctx_ids, cont_ids = self._encode_pair(context, continuation)
            else:
                ctx_ids, cont_ids = [self.prefix_token], self.backend.tokenize(continuation, False)
            out.append(self._continuation_logprob(ctx_ids, cont_ids))
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        out = []
        for request in requests:
            tokens = self.backend.tokenize(request.args[0], False)
            windows = get_rolling_token_windows(tokens, self.prefix_token, self.max_length, 1)
            out.append(sum(self._continuation_logprob(*make_disjoint_window(w))[0] for w in windows))
        return out

    # --- generation -----------------------------------------------------------------------------------------

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        return [self._generate(*request.args) for request in requests]

    def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        params = SamplingParams(max_new_tokens=int(gen_kwargs.get("max_gen_toks", 256)), stop=tuple(until))
        ids = self.backend.tokenize(context, False)[-(self.max_length - params.max_new_tokens):]  # as HFLM
        stream = StopTextStream(self.backend.decode, params.stop)
        tokens = self.backend.generate_ids(self.backend.text_prompt(ids), params)
        try:
            for token in tokens:
                stream.push(token)
                if stream.stopped:
                    break
        finally:
            tokens.close()
        return stream.text


def run_command_line(argv: list[str]) -> None:
    """``lm_eval ARGV`` (lm-eval's own parser and run) with the ``vlmkit`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    saved, sys.argv = sys.argv, ["lm_eval", *argv]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    run_command_line(sys.argv[1:])
