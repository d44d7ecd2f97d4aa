"""What every generation backend offers, and the sampling settings they all read the same way.

A backend turns (chat messages, images) into prompt tokens and then yields one generated token id at
a time; everything above the token level (stop strings, streaming text, timing, the JSON report) is
shared in ``vlmkit.runtime.session`` so that ``--stop`` or ``--max-new-tokens`` cannot mean two
different things on two backends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmkit.errors import VlmkitError

# One chat message as transformers' chat templates expect it: {"role": ..., "content": str | list}.
Message = dict[str, Any]

IMAGE = -1
"""In a token-id list given to ``Backend.logits``: one image, whatever number of rows the backend feeds for it
(transformers expands it to the processor's image-token run, llama.cpp to mtmd's embedding rows), so two
backends score the same text ids even where their image-token counts differ."""


@dataclass(frozen=True)
class SamplingParams:
    """transformers ``generate()`` semantics, applied identically by both backends.

    temperature 0 means greedy (``do_sample=False``). ``top_k=0`` and ``top_p=1`` switch those filters
    off (transformers would otherwise default top_k to 50). ``repetition_penalty`` divides positive
    logits and multiplies negative ones of every token seen so far, prompt included. Order:
    penalty -> temperature -> top-k -> top-p -> draw, as transformers' logits processors run.
    ``stop`` strings end generation as soon as the decoded text contains one; the returned text is cut
    before it (transformers' ``stop_strings`` would keep it; llama.cpp's server and OpenAI cut it).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):  # transformers rejects ints here
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))
        object.__setattr__(self, "top_k", int(self.top_k))
        checks = {
            "max_new_tokens must be >= 1": self.max_new_tokens >= 1,
            "temperature must be >= 0": self.temperature >= 0,
            "top_p must be in (0, 1]": 0 < self.top_p <= 1,
            "top_k must be >= 0": self.top_k >= 0,
            "repetition_penalty must be > 0": self.repetition_penalty > 0,
        }
        for message, ok in checks.items():
            if not ok:
                raise VlmkitError(None, f"bad sampling setting: {message}")
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SamplingParams:
        """Build from keyword arguments, rejecting unknown names (a typo must not be ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise VlmkitError(None, f"unknown sampling option(s): {', '.join(unknown)}")
        values = {k: v for k, v in kwargs.items() if v is not None}
        if isinstance(values.get("stop"), str):
            values["stop"] = (values["stop"],)
        if "stop" in values:
            values["stop"] = tuple(values["stop"])
        return cls(**values)


@dataclass
class GenerationResult:
    """One answer and how it was produced (the fields of ``vlmkit run --json``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    tokens_per_s: float | None  # None: fewer than two tokens, no decode interval to measure
    total_s: float
    peak_rss_mb: float
    finish_reason: str  # "eos" | "stop" | "length"
    backend: str
    token_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Prompt:
    """A prepared prompt: what the backend will evaluate, and its length in context positions."""

    text: str
    n_tokens: int
    payload: Any = None  # backend-specific (tensors for transformers, mtmd chunks for llama.cpp)


class Backend(Protocol):
    """A loaded model that generates token ids; see ``TransformersBackend`` and ``LlamaCppBackend``."""

    name: str
    n_ctx: int

    @property
    def image_placeholder(self) -> str | None:
        """The text that stands for an image in string content (None: the model takes no images)."""

    def image_texts(self) -> tuple[str, ...]:
        """Texts a user's prompt must not contain because the backend would take them for images."""

    def chat_template(self) -> str | None:
        """The model's Jinja chat template, or None when it has none."""

    def render(self, messages: Sequence[Message], n_images: int) -> str:
        """The prompt text after the chat template, with image placeholders as this family expects."""

    def prepare(self, messages: Sequence[Message], images: Sequence[Any]) -> Prompt:
        """Tokenize (and embed images); raises VlmkitError if the prompt does not fit the context."""

    def generate_ids(self, prompt: Prompt, params: SamplingParams) -> Iterator[int]:
        """Yield generated token ids, stopping at end-of-sequence or ``params.max_new_tokens``.

        Closing the iterator early must stop the computation."""

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text, special tokens skipped."""

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids of plain text (``add_special``: the BOS ... the tokenizer adds by default)."""

    def text_prompt(self, ids: Sequence[int]) -> Prompt:
        """A prompt of raw token ids (no chat template, no images) for ``generate_ids``."""

    def special_ids(self) -> dict[str, int | None]:
        """{"bos": id or None, "eos": id or None} of the vocabulary."""

    def bos_to_add(self) -> int | None:
        """The BOS id the tokenizer puts in front of a text, or None when it adds none."""

    def encode(self, messages: Sequence[Message], images: Sequence[Any]) -> list[int]:
        """The prompt's token ids as ``prepare`` builds them, each image as one ``IMAGE`` entry."""

    def logits(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> Any:
        """Teacher-forced next-token logits, float32 ``[n_text_tokens, n_vocab]``: one row per entry of
        ``token_ids`` that is not ``IMAGE`` (row i predicts the entry after it), computed in one pass with
        each ``IMAGE`` replaced by the matching image of ``images``."""

    def image_embeddings(self, image: Any) -> Any:
        """What the vision tower + projector feed the language model for ``image``, ``[rows, n_embd]``."""

    def close(self) -> None:
        """Release native resources."""
