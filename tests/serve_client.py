"""Shared by the serve tests: a free loopback port, and one chat request with an image through `openai`."""

from __future__ import annotations

import base64
import io
import socket
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ask(url: str, model: str, question: str, image: Any, max_tokens: int = 8) -> Any:
    """One greedy chat completion with a PNG data URL, through the official client (bounded: 120 s, no retry)."""
    from openai import OpenAI

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    client = OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)
    content = [{"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": question}]
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          max_tokens=max_tokens, temperature=0)


def serve_and_ask(plan: Any, question: str, image: Any, log_path: Any, ready_timeout_s: float) -> Any:
    """Start the planned server (log to ``log_path``), ask once when it is ready, and always stop it."""
    from vlmkit.serve import start_server, stop_server, wait_ready

    with open(log_path, "w") as log:
        process = start_server(plan, log)
        try:
            wait_ready(plan, process, timeout_s=ready_timeout_s)
            return ask(plan.url, plan.model, question, image)
        finally:
            stop_server(plan, process)
            assert process.returncode is not None  # stopped
