"""The ``vlmkit`` command: one module per verb, each a thin wrapper over a public function.

Heavy imports (torch, transformers, llama_cpp) happen inside the commands so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="vlmkit",
    help="Inspect, convert, quantize, run and evaluate vision-language models and LLMs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

PIPED_WIDTH = 160  # tensor names are ~60 characters; rich's 80-column default for pipes folds them


def console():
    """A rich console for command output: the terminal's width, or a wide fixed one when piped."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=PIPED_WIDTH)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print vlmkit's version and exit.", is_eager=True),
) -> None:
    """Inspect, convert, quantize, run and evaluate vision-language models and LLMs.

    Example: vlmkit demo   ·   vlmkit inspect demo --memory   ·   vlmkit run demo --image cat.png --prompt "What is this?"
    """
    if version:
        from vlmkit import __version__

        typer.echo(__version__)
        raise typer.Exit()


# Each module registers its command(s) on ``app`` when imported.
COMMAND_MODULES = ("inspect", "convert", "run", "demo", "diff")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"vlmkit.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"vlmkit.cli.{name}":
                raise


def main() -> None:
    from vlmkit.errors import VlmkitError

    _register()
    if not {"--verbose", "-v"} & set(sys.argv[1:]):
        from vlmkit.logs import quiet_transformers

        quiet_transformers()
    try:
        app()
    except VlmkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(1)
