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
    context_settings={"help_option_names": ["-h", "--help"]},
)

PIPED_WIDTH = 160  # tensor names are ~60 characters; rich's 80-column default for pipes folds them


def console():
    """A rich console for command output: the terminal's width, or a wide fixed one when piped."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=PIPED_WIDTH)


def _print_version(value: bool) -> None:
    """Runs while the options are parsed (before click asks for a command)."""
    if value:
        from vlmkit import __version__

        typer.echo(f"vlmkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print vlmkit's version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Inspect, convert, quantize, run and evaluate vision-language models and LLMs.

    Example: vlmkit demo   ·   vlmkit inspect demo --memory   ·   vlmkit run demo --image cat.png --prompt "What is this?"
    """


# Each module registers its command(s) on ``app`` when imported.
COMMAND_MODULES = ("inspect", "convert", "run", "serve", "demo", "diff", "eval", "quantize")


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"vlmkit.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"vlmkit.cli.{name}":
                raise


def main() -> None:
    """Run the CLI: vlmkit's errors as ``error: ...`` (exit 1), a closed pipe (``| head``) as a quiet
    exit 0, ``NO_COLOR`` honoured, and no third-party traceback unless --verbose."""
    import os

    from vlmkit.errors import VlmkitError

    _register()
    verbose = bool({"--verbose", "-v"} & set(sys.argv[1:]))
    if not verbose:
        from vlmkit.logs import quiet_transformers

        quiet_transformers()
    color = False if os.environ.get("NO_COLOR") else None  # https://no-color.org; rich reads it itself
    started_on_devnull = _stdout_is_devnull()
    try:
        app(color=color)
    except VlmkitError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True, color=color)
        sys.exit(1)
    except SystemExit as done:
        if done.code == 1 and _pipe_closed(started_on_devnull):
            sys.exit(0)  # the reader went away (`| head`): a normal end, as for cat or grep
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback without --verbose
        if verbose:
            raise
        from vlmkit.errors import error_summary

        typer.secho(f"error: {error.__class__.__name__}: {error_summary(error)} (rerun with --verbose for the "
                    "traceback)", fg=typer.colors.RED, err=True, color=color)
        sys.exit(1)


def _pipe_closed(started_on_devnull: bool) -> bool:
    """Whether an exit 1 came from stdout's reader closing the pipe: click then swaps in
    PacifyFlushWrapper, rich (``Console.on_broken_pipe``) points stdout's descriptor at /dev/null
    (which says nothing when the user sent stdout there in the first place: ``> /dev/null``)."""
    from click.utils import PacifyFlushWrapper

    if isinstance(sys.stdout, PacifyFlushWrapper):
        return True
    return not started_on_devnull and _stdout_is_devnull()


def _stdout_is_devnull() -> bool:
    import os

    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError):
        return False
