"""The end-of-run quality report of ``vlmkit quantize``: per-Linear error, held-out KLD, what was kept."""

from __future__ import annotations

from collections import Counter


def render(result, console) -> None:
    from rich.table import Table

    spec = result.spec
    console.print(f"[bold]{spec['method'].upper()} {spec['scheme']}[/bold] group {spec['group_size'] or 'channel'}"
                  f" {'sym' if spec['symmetric'] else 'asym'} -> {result.out}  "
                  f"({result.timings['total_s']:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB)")
    layers = Table(title="relative output error of each quantized Linear (calibration inputs)")
    for column in ("Linear", "group", "rel. error", "AWQ"):
        layers.add_column(column, justify="right" if column in ("group", "rel. error") else "left")
    for layer in result.layers:
        layers.add_row(layer["name"], str(layer["group_size"] or "channel"), f"{layer['relative_error']:.4f}",
                       layer["awq"] or "")
    console.print(layers)
    quality = Table(title="quantized vs original on held-out prompts (disjoint from calibration)")
    for column in ("set", "positions", "mean KLD", "max KLD", "same top-1 %", "RMS Δp", "last position: KLD",
                   "same top-1 %"):
        quality.add_column(column, justify="left" if column == "set" else "right")
    for name, q in result.quality.items():
        quality.add_row(name, str(q["n_positions"]), f"{q['mean_kld']:.3g}", f"{q['max_kld']:.3g}",
                        f"{100 * q['same_top1']:.2f}", f"{q['rms_dp']:.4f}", f"{q['last_position_mean_kld']:.3g}",
                        f"{100 * q['last_position_same_top1']:.2f}")
    console.print(quality)
    reasons = Counter(result.kept.values())
    console.print(f"quantized {len(result.quantized)} Linears; kept {len(result.kept)}: " +
                  "; ".join(f"{n} × {reason}" for reason, n in reasons.items()))
    for note in result.notes:
        console.print(f"note: {note}")
    console.print("files: " + ", ".join(result.files))
