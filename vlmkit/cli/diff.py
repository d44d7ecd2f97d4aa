"""``vlmkit diff``: a thin wrapper over :func:`vlmkit.diff.diff_checkpoints`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vlmkit.cli import app


@app.command(
    "diff",
    epilog="Example: vlmkit diff ./paligemma ./paligemma-ft --plot layers.png   ·   "
           "vlmkit diff paligemma.npz ./paligemma-hf --json   ·   vlmkit diff ./llama ./llama-gguf/model.gguf   ·   "
           "vlmkit diff ./base ./lora-adapter --report diff.html",
)
def diff_command(
    a: Annotated[str, typer.Argument(metavar="A", help="The reference: HF folder, big_vision .npz, hub id or 'zoo:<name>'.")],
    b: Annotated[str, typer.Argument(metavar="B", help="The other: HF folder, .npz, a GGUF converted from A, or a PEFT LoRA "
                                          "adapter folder of A.")],
    tolerance: Annotated[float, typer.Option(help="Relative change at or below which a tensor counts as "
                                                  "unchanged (e.g. 1e-3 across an f16 conversion).")] = 0.0,
    plot: Annotated[Optional[Path], typer.Option(help="Write the layer × module heatmap (PNG).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a self-contained HTML report.")] = None,
    top: Annotated[int, typer.Option(help="Changed tensors listed (largest relative change first).")] = 20,
    download: Annotated[bool, typer.Option(help="Fetch hub ids that are not in the local HF cache.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """What changed from A to B: per tensor (unchanged / changed / added / removed / reshaped), relative
    change, max |Δ| and cosine, rolled up per layer, component and module kind, across formats."""
    import sys

    from vlmkit.diff import diff_checkpoints

    result = diff_checkpoints(a, b, tolerance=tolerance, progress=sys.stderr.isatty() and not as_json,
                              download=download)
    if plot is not None or report is not None:
        from vlmkit.diff_report import write_html, write_plot

        if plot is not None:
            write_plot(result, plot)
        if report is not None:
            write_html(result, report)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
        return
    from vlmkit.cli.diff_view import render

    render(result, top=top)
