"""lmms-eval model ``vlmkit``: image + text benchmarks through vlmkit's backends (transformers, llama.cpp ...).

    lmms-eval --model vlmkit --model_args model=out/,backend=llamacpp --tasks mme

lmms-eval (0.7) finds third-party models through the ``lmms_eval.models`` entry-point group: vlmkit's
``pyproject.toml`` declares ``vlmkit = "vlmkit.eval.lmms_eval_model:manifest"`` there, so once vlmkit is
installed next to lmms-eval the plain ``lmms-eval --model vlmkit`` command sees it. This is lmms-eval's
"simple" model kind: each request brings its question text and its document's images.

- ``generate_until``: the question as one user turn, images first, through the model's chat template, exactly
  as ``vlmkit run`` / ``vlmkit eval vqa`` build it, answered by ``Runner.generate`` (greedy unless the task asks
  for a temperature; ``until`` strings stop and cut the answer);
- ``loglikelihood``: the same prompt followed by the continuation's tokens, scored on the backend's
  teacher-forced ``logits`` (the rows ``vlmkit eval compare`` scores on image sets).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from lmms_eval.api.model import lmms

from vlmkit.errors import UnsupportedError
from vlmkit.metrics.logits import log_softmax

MODEL_ID = "vlmkit"


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: lmms-eval imports the class only when ``--model vlmkit`` asks."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.{VlmkitLMMS.__name__}")


class VlmkitLMMS(lmms):
    """``model_args``: ``model`` (path, hub id, demo, zoo:<name>), ``backend`` (auto), ``threads``,
    ``max_new_tokens`` (when the task gives none)."""

    def __init__(self, model: str = "demo", backend: str = "auto", threads: int | None = None,
                 max_new_tokens: int = 256, verbose: bool = False, **_lmms_eval_options: Any):
        super().__init__()
        from vlmkit.api import load

        self.runner = load(model, backend=backend, threads=int(threads) if threads else None, verbose=verbose)
        self.backend = self.runner.backend
        self.max_new_tokens = int(max_new_tokens)

    def _document(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list[Any]:
        images = list(doc_to_visual(self.task_dict[task][split][doc_id]) or []) if doc_to_visual else []
        if not all(hasattr(image, "convert") for image in images):
            raise UnsupportedError(None, f"task {task}: only still images are supported (got "
                                         f"{sorted({type(x).__name__ for x in images})})")
        return [image.convert("RGB") for image in images]

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        from vlmkit.eval.compare import answer_ids

        out = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            images = self._document(doc_to_visual, doc_id, task, split)
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            ids, tokens, rows = answer_ids(self.backend, context, images, continuation)
            logprobs = log_softmax(self.backend.logits(ids, images)[rows])
            picked = logprobs[np.arange(len(tokens)), tokens]
            out.append((float(picked.sum()), bool((logprobs.argmax(-1) == np.array(tokens)).all())))
        return out

    def generate_until(self, requests: list[Any]) -> list[str]:
        out = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            images = self._document(doc_to_visual, doc_id, task, split)
            out.append(self.runner.generate(context, images=images, **self._sampling(gen_kwargs)).text)
        return out

    def _sampling(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        sampling = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens),
                    "stop": tuple(until)}
        if float(gen_kwargs.get("temperature") or 0) > 0:
            sampling["temperature"] = float(gen_kwargs["temperature"])
            sampling["top_p"] = float(gen_kwargs.get("top_p") or 1.0)
        return sampling

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        raise UnsupportedError(None, "multi-round generation is not supported by the vlmkit model")
