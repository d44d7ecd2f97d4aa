"""Rich rendering of a :class:`vlmkit.diff.DiffReport`."""

from __future__ import annotations

from rich.table import Table

from vlmkit.cli import console as make_console
from vlmkit.diff import DiffReport
from vlmkit.metrics.tensor_diff import UNCHANGED, Rollup


def render(report: DiffReport, *, top: int = 20) -> None:
    console = make_console()
    console.print(f"[bold]{report.b}[/] vs [bold]{report.a}[/]  ({' vs '.join(report.kinds)}, {report.seconds:.1f} s)")
    console.print("tensors: " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items())))
    for component, layers in report.changed_layers().items():
        console.print(f"changed layers in {component}: " + (_ranges(layers) if layers else "none"))
    console.print(_rollups("components", report.components.values()))
    console.print(_rollups("module kinds", report.modules.values()))
    changed = sorted((d for d in report.tensors if d.status != UNCHANGED),
                     key=lambda d: -(d.stats.rel_change if d.stats else 0))
    if changed:
        table = Table(title=f"changed tensors ({min(top, len(changed))} of {len(changed)})", title_justify="left")
        for column in ("tensor", "status", "rel change", "max |Δ|", "cosine"):
            table.add_column(column, overflow="fold" if column == "tensor" else "ellipsis")
        for d in changed[:top]:
            stats = d.stats
            table.add_row(d.name, d.status, *(
                (f"{stats.rel_change:.3e}", f"{stats.max_abs:.3e}", "-" if stats.cosine is None else f"{stats.cosine:.6f}")
                if stats else (d.note or "", "", "")))
        console.print(table)
    for note in report.notes[:10]:
        console.print(f"[yellow]{note}[/]")


def _rollups(title: str, rollups) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("group", "tensors", "changed", "rel change", "max |Δ|"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for r in rollups:
        r: Rollup
        table.add_row(r.key, str(r.tensors), str(r.changed), f"{r.rel_change:.3e}", f"{r.max_abs:.3e}")
    return table


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    parts, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}-{v}" if v != start else str(v))
            start = None
    return ", ".join(parts)
