"""``vlmkit serve``: a thin wrapper over :mod:`vlmkit.serve` (plan, start, wait until ready, stop on Ctrl-C)."""

from __future__ import annotations

import json
import shlex
from typing import Annotated

import typer

from vlmkit.cli import app

_EXAMPLE = ("Example: vlmkit serve ./llava-w4a16 --port 8000   ·   vlmkit serve demo-gguf --engine llamacpp   ·   "
            "vlmkit serve demo --dry-run --json")


@app.command("serve", epilog=_EXAMPLE)
def serve_command(
    model: Annotated[str, typer.Argument(help="HF dir/hub id (vLLM), GGUF file/dir (llama.cpp), demo, zoo:NAME.")],
    engine: Annotated[str, typer.Option(help="auto (HF -> vllm, GGUF -> llamacpp) | vllm | llamacpp.")] = "auto",
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    dtype: Annotated[str | None, typer.Option(help="vLLM weights dtype: f32, bf16, f16 (default: as saved; "
                                                   "bf16 for W4A16 on CPU).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the server command and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print URL, command and example request as JSON.")] = False,
    download: Annotated[bool, typer.Option("--download", help="Fetch a hub id that is not in the local cache.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the engine's own log.")] = False,
) -> None:
    """Serve MODEL over an OpenAI-compatible HTTP API (vLLM for HF checkpoints, llama.cpp for GGUF)."""
    from vlmkit.serve import plan_server, start_server, stop_server, wait_ready

    plan = plan_server(model, engine=engine, host=host, port=port, dtype=dtype, verbose=verbose, download=download)
    if as_json:
        typer.echo(json.dumps(plan.as_dict(), ensure_ascii=False))
    else:
        typer.echo(f"{plan.engine} server for {plan.model!r} at {plan.url}")
        typer.echo(f"command: {shlex.join(plan.argv)}")
        typer.echo(f"example: {plan.example()}")
    if dry_run:
        for path in plan.files:
            path.unlink(missing_ok=True)
        return
    process = start_server(plan)
    try:
        wait_ready(plan, process)
        typer.secho(f"ready: {plan.url} (Ctrl-C stops)", err=True, dim=True)
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(plan, process)
