"""Pictures of a :class:`vlmkit.diff.DiffReport`: the layer × module heatmap (matplotlib) and an HTML page.

One panel per component with layers (vision tower, language model ...): rows are layers, columns module
kinds, colour the pooled relative change ‖A−B‖/‖A‖ on a log scale; untouched cells stay white, so the
layers a fine-tune touched stand out.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from vlmkit.diff import KIND_ORDER, DiffReport
from vlmkit.metrics.tensor_diff import UNCHANGED


def heatmap_png(report: DiffReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    panels = [c for c in report.cells if report.layers.get(c)]
    if not panels:
        panels = ["(no layers)"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 3 * len(panels), 6), squeeze=False)
    values = [r.rel_change for cells in report.cells.values() for r in cells.values() if r.rel_change > 0]
    finite = [v for v in values if math.isfinite(v)]
    norm = LogNorm(vmin=min(finite), vmax=max(finite) * (1 + 1e-9)) if finite else None
    image = None
    for ax, component in zip(axes[0], panels, strict=True):
        cells = report.cells.get(component, {})
        layers = sorted({layer for layer, _ in cells})
        kinds = [k for k in KIND_ORDER if any(kind == k for _, kind in cells)]
        grid = np.full((len(layers), len(kinds)), np.nan)
        for (layer, kind), rollup in cells.items():
            if rollup.rel_change > 0:
                grid[layers.index(layer), kinds.index(kind)] = min(rollup.rel_change, max(finite or [1.0]))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_title(component)
        ax.set_xticks(range(len(kinds)), kinds, rotation=45)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set_ylabel("layer")
    if image is not None and norm is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="relative change ‖A−B‖/‖A‖")
    fig.suptitle(f"{Path(report.b).name} vs {Path(report.a).name}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_plot(report: DiffReport, out: Path) -> None:
    out.write_bytes(heatmap_png(report))


def write_html(report: DiffReport, out: Path) -> None:
    """A self-contained page: counts, changed layers, roll-ups, the heatmap and the changed tensors."""
    png = base64.b64encode(heatmap_png(report)).decode()
    esc = html.escape
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.counts().items()))
    layers = "".join(f"<li>{esc(c)}: {esc(str(v) if v else 'none')}</li>" for c, v in report.changed_layers().items())
    rollups = "".join(
        f"<tr><td>{esc(r.key)}</td><td>{r.tensors}</td><td>{r.changed}</td><td>{r.rel_change:.3e}</td>"
        f"<td>{r.max_abs:.3e}</td></tr>" for r in [*report.components.values(), *report.modules.values()])
    tensors = "".join(
        f"<tr><td>{esc(d.name)}</td><td>{d.status}</td>"
        + (f"<td>{d.stats.rel_change:.3e}</td><td>{d.stats.max_abs:.3e}</td><td>{_cos(d.stats.cosine)}</td>"
           if d.stats else f"<td colspan=3>{esc(d.note or '')}</td>") + "</tr>"
        for d in report.tensors if d.status != UNCHANGED)
    out.write_text(f"""<!doctype html><meta charset="utf-8"><title>vlmkit diff</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:left}}</style>
<h1>{esc(report.b)} vs {esc(report.a)}</h1><p>{esc(' vs '.join(report.kinds))} · {esc(counts)}</p>
<h2>Changed layers</h2><ul>{layers}</ul>
<h2>Roll-ups</h2><table><tr><th>group</th><th>tensors</th><th>changed</th><th>rel change</th><th>max |Δ|</th></tr>
{rollups}</table>
<h2>Layer × module</h2><img src="data:image/png;base64,{png}">
<h2>Tensors that are not unchanged</h2><table><tr><th>tensor</th><th>status</th><th>rel change</th>
<th>max |Δ|</th><th>cosine</th></tr>{tensors}</table>
""", encoding="utf-8")


def _cos(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"
