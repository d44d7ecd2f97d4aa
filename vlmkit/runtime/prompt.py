"""Chat messages, images and the rules both backends share for turning them into prompt text.

Both backends must see the same prompt text and tokens, so the conventions transformers applies in
``apply_chat_template`` are written down once here (when special tokens are added, how image parts
appear in a message) rather than left to each backend.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.runtime.base import Message


def load_image(image: Any) -> Any:
    """A path or PIL image -> RGB PIL image; one-line error naming a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(os.fspath(image)).expanduser()
    if not path.is_file():
        raise VlmkitError(path, "image not found" if not path.exists() else "image is not a file")
    try:
        with Image.open(path) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise VlmkitError(path, f"cannot read the image ({error.__class__.__name__}: {error})") from None


def image_prefix(n_images: int, placeholder: str | None) -> str:
    """The text that stands for ``n_images`` images in a string prompt: one placeholder line per image,
    before the question (LLaVA's documented ``USER: <image>\n{question}`` layout)."""
    return (placeholder + "\n") * n_images if placeholder else ""


def user_message(text: str, n_images: int, typed_content: bool, placeholder: str | None = "<image>") -> Message:
    """A user turn; images come first, as LLaVA-style templates and processors expect. For templates
    that read ``content`` as a string (and for no template) the images are ``placeholder`` lines in
    the text, where the processor looks for them."""
    if not typed_content:
        return {"role": "user", "content": image_prefix(n_images, placeholder) + text}
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def assistant_message(text: str, typed_content: bool) -> Message:
    content: Any = [{"type": "text", "text": text}] if typed_content else text
    return {"role": "assistant", "content": content}


def uses_typed_content(template: str | None) -> bool:
    """Whether a chat template reads content parts (``{"type": "image"}``) rather than plain strings."""
    return bool(template) and "type" in template


def plain_render(messages: Sequence[Message], image_placeholder: str) -> str:
    """Prompt text for a model without a chat template: the turns concatenated, images first."""
    pieces: list[str] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            pieces.append(content)
            continue
        images = sum(part["type"] == "image" for part in content)
        text = "".join(part.get("text", "") for part in content)
        pieces.append(image_prefix(images, image_placeholder) + text)
    return "".join(pieces)


def add_special_tokens(text: str, bos_token: str | None, has_template: bool, processor: bool) -> bool:
    """Whether tokenizing ``text`` should add the tokenizer's special tokens (BOS).

    Mirrors transformers: ``tokenizer.apply_chat_template`` never adds them (the template writes
    BOS itself); a processor adds them unless the rendered prompt already starts with BOS; a raw
    prompt (no template) gets the tokenizer's default (True)."""
    if not has_template:
        return True
    if processor:
        return not (bos_token and text.startswith(bos_token))
    return False


def import_renderer_early() -> threading.Thread:
    """Import transformers' template renderer (~0.6 s) on a thread, while the caller waits in native code
    that releases the GIL (llama.cpp loading a model); ``join()`` it before rendering."""
    def load() -> None:
        with contextlib.suppress(Exception):   # the import at the point of use raises it properly
            importlib.import_module("transformers.utils.chat_template_utils")

    thread = threading.Thread(target=load, name="vlmkit-import-renderer", daemon=True)
    thread.start()
    return thread


def render_template(template: str, messages: Sequence[Message], special_tokens: dict[str, str]) -> str:
    """Render a chat template exactly as transformers' ``apply_chat_template`` does (same function,
    same sandboxed Jinja environment: ``jinja2.sandbox.ImmutableSandboxedEnvironment``, special tokens
    passed as variables), so a GGUF's template gives the llama.cpp backend the prompt text the
    transformers backend sees."""
    from transformers.utils.chat_template_utils import render_jinja_template

    with template_errors():
        rendered, _ = render_jinja_template(conversations=[list(messages)], chat_template=template,
                                            add_generation_prompt=True, **special_tokens)
    return rendered[0]


@contextlib.contextmanager
def template_errors() -> Iterator[None]:
    """A chat template that fails (syntax, ``raise_exception``, the sandbox refusing an attribute)
    becomes one line naming the template, not Jinja's traceback."""
    import jinja2

    try:
        yield
    except jinja2.TemplateError as error:
        kind = "refused by the sandbox" if isinstance(error, jinja2.exceptions.SecurityError) else "failed"
        raise VlmkitError(None, f"the chat template {kind}: {error.__class__.__name__}: {error}") from None


def template_image_text(template: str, special_tokens: dict[str, str]) -> str | None:
    """The text a chat template writes for one image part (``<image>`` for LLaVA), found by rendering
    a turn with and without an image: GGUF metadata does not record it."""
    probe = "\x01probe\x01"
    with_image = render_template(template, [user_message(probe, 1, True)], special_tokens)
    without = render_template(template, [user_message(probe, 0, True)], special_tokens)
    prefix = os.path.commonprefix([with_image, without])
    suffix = os.path.commonprefix([with_image[len(prefix):][::-1], without[len(prefix):][::-1]])
    inserted = with_image[len(prefix):len(with_image) - len(suffix)].strip()
    return inserted or None
