"""``vlmkit run``: a thin wrapper over :func:`vlmkit.api.load` and ``Runner.stream``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vlmkit.cli import app

_EXAMPLE = (
    "Example: vlmkit run demo --image scene.png --prompt 'What color is the square?'   ·   "
    "vlmkit run out/model.gguf --prompt 'Hello' --temperature 0.7 --top-p 0.9 --repetition-penalty 1.05 --json"
)


@app.command("run", epilog=_EXAMPLE)
def run_command(
    model: Annotated[str, typer.Argument(help="HF dir/hub id, GGUF file/dir, demo, zoo:NAME.")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="The question or instruction.")] = None,
    image: Annotated[list[Path] | None, typer.Option("--image", "-i", help="Image file (repeatable).")] = None,
    backend: Annotated[str, typer.Option(help="auto | transformers | llamacpp | vllm (HF dir; pip install 'vlmkit[vllm]').")] = "auto",
    device: Annotated[str, typer.Option(help="cpu | cuda | auto.")] = "auto",
    dtype: Annotated[str | None, typer.Option(help="Weights dtype (transformers): f32, bf16, f16; default as saved.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads.", min=1)] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate.")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy (default).")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1 = off).")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Keep the k most likely tokens (0 = off).")] = 0,
    repetition_penalty: Annotated[float, typer.Option(help="Penalty over prompt + output (1 = off).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop when this text appears (repeatable).")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Interactive session that keeps the history.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Text, token counts, timings, peak RSS as JSON.")] = False,
    download: Annotated[bool, typer.Option(help="Fetch a hub id that is not in the local HF cache.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show llama.cpp / transformers logs.")] = False,
) -> None:
    """Generate text (optionally about images) with the transformers, llama.cpp or vLLM backend."""
    from vlmkit.api import load
    from vlmkit.errors import VlmkitError
    from vlmkit.runtime.base import SamplingParams
    from vlmkit.runtime.prompt import load_image

    if prompt is None and not chat:
        raise VlmkitError(None, "give --prompt TEXT (or --chat for an interactive session)")
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                    repetition_penalty=repetition_penalty, seed=seed, stop=tuple(stop or ()))
    try:  # bad settings and images fail before the model loads
        SamplingParams.from_kwargs(**sampling)
    except VlmkitError as error:
        raise VlmkitError(error.path, flag_names(error.reason, sampling)) from None
    images = [load_image(path) for path in image or ()]
    runner = load(model, backend=backend, device=device, dtype=dtype, threads=threads, verbose=verbose,
                  download=download)
    if chat:
        _chat(runner, prompt, images, sampling, as_json)
    else:
        _answer(runner.stream(prompt or "", images, **sampling), runner, as_json)


def flag_names(message: str, names: dict[str, Any]) -> str:
    """A library message's parameter names (``top_p``) as the command's flags (``--top-p``)."""
    import re

    pattern = r"\b(" + "|".join(map(re.escape, names)) + r")\b"
    return re.sub(pattern, lambda match: "--" + match.group(1).replace("_", "-"), message)


def _answer(pieces: Any, runner: Any, as_json: bool) -> None:
    """Stream pieces to stdout (or collect them for --json), then the statistics."""
    for piece in pieces:
        if not as_json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    result = runner.last_result
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    typer.echo("")
    rate = f"{result.tokens_per_s:.1f} tok/s, " if result.tokens_per_s is not None else ""  # no decode step to time
    typer.secho(f"[{result.backend}: {result.prompt_tokens} prompt + {result.completion_tokens} tokens, "
                f"first token {result.time_to_first_token_s:.2f} s, {rate}"
                f"peak RSS {result.peak_rss_mb:.0f} MB, {result.finish_reason}]", err=True, dim=True)


def _chat(runner: Any, prompt: str | None, images: list[Any], sampling: dict, as_json: bool) -> None:
    """Read turns from stdin until EOF or /exit; /reset forgets the history. --image files join the
    first turn."""
    interactive = sys.stdin.isatty()
    if interactive:
        typer.secho("chat: /reset forgets the history, /exit or Ctrl-D quits", err=True, dim=True)
    while True:
        if prompt is None:
            try:
                prompt = input("> " if interactive else "")
            except EOFError:
                return
        text = prompt.strip()
        prompt = None
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            runner.reset()
            continue
        if not text:
            continue
        try:
            _answer(runner.chat(text, images, **sampling), runner, as_json)
        except KeyboardInterrupt:  # Ctrl-C stops this answer (it is not kept), not the session
            typer.echo("")
        images = []
