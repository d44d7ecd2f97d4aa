"""``vlmkit inspect``: a thin wrapper over :func:`vlmkit.inspect.inspect_model` and friends."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vlmkit.cli import app


@app.command(
    "inspect",
    epilog="Example: vlmkit inspect demo --memory   ·   vlmkit inspect ./llava-calm2-siglip --tree --json",
)
def inspect_command(
    model: Annotated[str, typer.Argument(help="Directory, file, hub id, 'demo' or 'zoo:<name>'.")],
    tree: Annotated[bool, typer.Option("--tree", help="Module tree with parameter counts (config only).")] = False,
    memory: Annotated[bool, typer.Option("--memory", help="Memory to load per dtype / quantization and to train.")] = False,
    tensors: Annotated[bool, typer.Option("--tensors/--no-tensors", help="Show the folded tensor table.")] = True,
    depth: Annotated[int, typer.Option(help="Depth of --tree.")] = 4,
    download: Annotated[bool, typer.Option(help="Fetch a hub id that is not in the local HF cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show what a checkpoint holds without loading its weights: components, parameters, dtypes, tokenizer."""
    from vlmkit.inspect import inspect_model

    report = inspect_model(model, tree=tree, memory=memory, download=download)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str))
        return
    from vlmkit.cli.inspect_view import render

    render(report, show_tensors=tensors, depth=depth)
