"""The small files beside the weights: ``config.json`` and the chat template, read and checked once.

A ``config.json`` that is not a JSON object, or a chat template that the sandbox refuses (one that
reaches for Python internals such as ``''.__class__.__mro__``), is a one-line ``CheckpointError``
naming the file, raised before any consumer (convert, run ...) builds or writes anything. Templates
are rendered only by transformers' ``render_jinja_template`` (Jinja's ``ImmutableSandboxedEnvironment``),
the renderer both backends use; ``auto_map`` code in a checkpoint is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmkit.errors import CheckpointError
from vlmkit.readers.base import one_line

TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; anything else is a one-line error naming the file."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(path, "not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise CheckpointError(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"not a JSON object (a {type(data).__name__})")
    return data


def read_config(folder: Path) -> dict[str, Any] | None:
    """``folder/config.json`` as a dict, None when there is none."""
    path = Path(folder) / "config.json"
    return read_json_object(path) if path.is_file() else None


def find_chat_template(folder: Path) -> tuple[Path, str] | None:
    """(file, template) of the checkpoint's chat template (the default one of several), or None."""
    for name in TEMPLATE_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        if name.endswith(".jinja"):
            return path, path.read_text(encoding="utf-8", errors="replace")
        value = read_json_object(path).get("chat_template")
        if isinstance(value, list):   # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next(iter(named.values()), None)
        if isinstance(value, str) and value:
            return path, value
    return None


def check_chat_template(folder: Path) -> None:
    """Render the chat template once, in the sandbox, on a probe conversation: a template that the
    sandbox refuses is refused here, before anything runs or is written."""
    found = find_chat_template(folder)
    if found is None:
        return
    path, template = found
    check_template_text(path, template)


def check_template_text(path: Path | str | None, template: str) -> None:
    from jinja2.exceptions import SecurityError, TemplateSyntaxError
    from transformers.utils.chat_template_utils import render_jinja_template

    probe = [{"role": "user", "content": "probe"}]
    try:
        render_jinja_template(conversations=[probe], chat_template=template, add_generation_prompt=True)
    except SecurityError as error:
        raise CheckpointError(path, f"chat template refused by the sandbox: it tries to reach Python "
                                    f"internals ({one_line(error)})") from None
    except TemplateSyntaxError as error:
        raise CheckpointError(path, f"chat template is not valid Jinja: {one_line(error)} "
                                    f"(line {error.lineno})") from None
    except Exception:  # noqa: BLE001 - raise_exception() for a probe the template does not expect is fine
        pass
