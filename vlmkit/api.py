"""Python API for running a model: ``vlmkit.load(model).generate(prompt, images=[...])``.

``vlmkit run`` is a thin wrapper over this module. The backend is chosen from the files: a GGUF
file (or a directory holding ``model.gguf``) runs on llama.cpp, an HF directory or hub id on
transformers; ``backend=`` forces one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.runtime.base import Backend, GenerationResult, Message, SamplingParams
from vlmkit.runtime.registry import gguf_files, open_backend  # noqa: F401  (gguf_files: public name)
from vlmkit.runtime.registry import pick as pick_backend  # noqa: F401  (public name)


class Runner:
    """A loaded model. ``generate`` returns a GenerationResult, ``stream`` yields text pieces (the
    result of the last call is then in ``last_result``); ``chat`` keeps a conversation."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.last_result: GenerationResult | None = None
        self.history: list[Message] = []
        self.history_images: list[Any] = []

    @property
    def name(self) -> str:
        return self.backend.name

    def generate(self, prompt: str, images: Sequence[Any] = (), **sampling: Any) -> GenerationResult:
        for _ in self.stream(prompt, images, **sampling):
            pass
        assert self.last_result is not None
        return self.last_result

    def generate_batch(self, prompts: Sequence[str], images: Sequence[Sequence[Any]] = (),
                       **sampling: Any) -> list[GenerationResult]:
        """One answer per prompt (``images[i]``: the images of prompt i), in one batch where the backend
        batches (vLLM), else one after the other."""
        from vlmkit.runtime.prompt import load_image, user_message, uses_typed_content

        params = SamplingParams.from_kwargs(**sampling)
        per_prompt = [[load_image(i) for i in group] for group in images] if images else [[] for _ in prompts]
        if len(per_prompt) != len(prompts):
            raise VlmkitError(None, f"{len(prompts)} prompts but {len(per_prompt)} image lists")
        if not hasattr(self.backend, "generate_batch"):
            return [self.generate(p, group, **sampling) for p, group in zip(prompts, per_prompt)]
        typed = uses_typed_content(self.backend.chat_template())
        prepared = [self.backend.prepare([user_message(p, len(group), typed)], group)
                    for p, group in zip(prompts, per_prompt)]
        return self.backend.generate_batch(prepared, params)

    def stream(self, prompt: str, images: Sequence[Any] = (), **sampling: Any) -> Iterator[str]:
        return self._stream(prompt, images, sampling, keep=False)

    def chat(self, prompt: str, images: Sequence[Any] = (), **sampling: Any) -> Iterator[str]:
        """Like ``stream`` but the turn (and its images) joins ``history`` for the next call."""
        return self._stream(prompt, images, sampling, keep=True)

    def reset(self) -> None:
        self.history.clear()
        self.history_images.clear()

    def _stream(self, prompt: str, images: Sequence[Any], sampling: dict, keep: bool) -> Iterator[str]:
        from vlmkit.runtime.prompt import load_image, user_message, uses_typed_content
        from vlmkit.runtime.session import run_generation

        params = SamplingParams.from_kwargs(**sampling)
        reserved = next((text for text in self.backend.image_texts() if text in prompt), None)
        if reserved:
            raise VlmkitError(None, f"the prompt contains {reserved!r}, which this model reads as an image: "
                                    "give pictures with --image (images=...), vlmkit places them")
        loaded = [load_image(image) for image in images]
        typed = uses_typed_content(self.backend.chat_template())
        turn = user_message(prompt, len(loaded), typed, self.backend.image_placeholder)
        all_images = [*self.history_images, *loaded] if keep else loaded
        messages = [*self.history, turn] if keep else [turn]
        self.last_result = yield from run_generation(self.backend, messages, all_images, params)
        if keep:
            self.history += [turn, self._reply(messages, len(all_images), self.last_result.text, typed)]
            self.history_images = all_images

    def _reply(self, messages: list[Message], n_images: int, text: str, typed: bool) -> Message:
        """The assistant turn for the history: the one whose rendering continues the prompt with exactly
        the generated text. Templates that end the generation prompt with ``ASSISTANT:`` but render a
        past turn as ``ASSISTANT: {content}`` need the model's leading space dropped, or the next turn
        sees ``ASSISTANT:  red`` (two spaces), text the model never saw, and answers nothing."""
        from vlmkit.runtime.prompt import assistant_message

        if self.backend.chat_template() is None:
            return assistant_message(text, typed)
        prompt = self.backend.render(messages, n_images)
        for candidate in (text, text.lstrip()):
            reply = assistant_message(candidate, typed)
            if self.backend.render([*messages, reply], n_images).startswith(prompt + text):
                return reply
        return assistant_message(text, typed)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(model: str | os.PathLike, backend: str = "auto", device: str = "auto", dtype: str | None = None,
         threads: int | None = None, verbose: bool = False, download: bool = False) -> Runner:
    """Load MODEL ("demo", "zoo:<name>", an HF directory / hub id, or a GGUF file / directory)."""
    from vlmkit.hub import resolve_model
    from vlmkit.logs import quiet_transformers

    if threads is not None and threads < 1:
        raise VlmkitError(None, f"threads must be >= 1, not {threads}")
    quiet_transformers(verbose)  # also a zoo build's output while MODEL resolves, before any backend exists
    path = resolve_model(model, download=download)
    return Runner(open_backend(path, backend, device, dtype, threads, verbose))
