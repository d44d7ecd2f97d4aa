"""Human-readable output of ``vlmkit convert`` (rich)."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from vlmkit.cli import console as make_console


def render(result) -> None:
    console = make_console()
    if hasattr(result, "direction"):   # vlmkit.export.big_vision.MapResult
        render_mapped(console, result)
        return
    console.print(f"[bold]model[/bold]  {result.model_path}  ({result.arch}, {result.dtype}, "
                  f"{result.n_tensors} tensors, {result.seconds:.1f} s)")
    if result.mmproj_path:
        console.print(f"[bold]mmproj[/bold] {result.mmproj_path}  ({result.mmproj_dtype})")
        for why, n in Counter(result.mmproj_kept.values()).items():
            console.print(f"  kept {n} tensor(s) at {why}")
    console.print(f"[bold]tokenizer[/bold] {result.tokenizer}")
    for reason, n in Counter(result.dropped.values()).items():
        console.print(f"  left out {n} tensor(s): {reason}")
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")
    if result.verify is not None:
        render_verify(console, result.verify)


def render_mapped(console: Console, result) -> None:
    console.print(f"[bold]{result.direction}[/bold]  {result.out}  ({result.family}, {result.tensors_in} -> "
                  f"{result.tensors_out} tensors, {result.seconds:.1f} s)")
    console.print(f"layout: {result.layout}   config: {result.config_from}")
    if result.tokenizer:
        console.print(f"processor files from {result.tokenizer}")
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")


def render_verify(console: Console, report) -> None:
    table = Table(title=f"parity vs transformers ({report.dtype})", show_header=True)
    table.add_column("check")
    table.add_column("result", justify="right")
    tok = report.tokenizer
    explained = len(tok.mismatches) - tok.unexplained
    extra = f" (+{explained} explained)" if explained else ""
    table.add_row("tokenizer agreement (EN+JA corpus)", f"{tok.n_same}/{tok.n_texts} = {tok.agreement:.1%}{extra}")
    for g in report.greedy:
        same = "identical" if g.first_diff is None else f"first difference at token {g.first_diff}"
        table.add_row(f"greedy {len(g.hf_tokens)} tokens: {g.prompt!r}", f"{g.n_same}/{len(g.hf_tokens)} {same}")
    t = report.teacher
    table.add_row("teacher-forced positions", str(t.n_positions))
    table.add_row("max |Δ logit|", f"{t.max_abs_diff:.3g}")
    table.add_row("mean KLD", f"{t.mean_kld:.3g}")
    table.add_row("same top-1", f"{t.same_top1:.2%}")
    ig = report.image_greedy
    if ig and "skipped" not in ig:
        same = "identical" if ig["first_diff"] is None else f"first difference at token {ig['first_diff']}"
        table.add_row(f"greedy {len(ig['hf_tokens'])} tokens with {ig.get('image', 'image')}", f"{ig['n_same']}/{len(ig['hf_tokens'])} {same}")
        table.add_row("with image: mean KLD / same top-1",
                      f"{ig['teacher']['mean_kld']:.3g} / {ig['teacher']['same_top1']:.2%}")
    elif ig:
        table.add_row("greedy with image", f"skipped: {ig['skipped']}")
    if report.image:
        for key, value in report.image.items():
            if isinstance(value, (int, float, str)):
                table.add_row(f"image: {key}", f"{value:.6g}" if isinstance(value, float) else str(value))
        resize = report.image.get("resize")
        if resize:
            table.add_row("image at its own size: cosine / min token cosine",
                          f"{resize['cosine']:.6g} / {resize['min_token_cosine']:.6g}")
    console.print(table)
    for note in (report.image or {}).get("notes", []):
        console.print(f"[yellow]image: {note}[/yellow]")
    for m in tok.mismatches[:4]:
        if m.get("explained"):
            console.print(f"[yellow]tokenizer difference[/yellow] {m['text']!r}: {m['explained']}")
        else:
            console.print(f"[red]tokenizer mismatch[/red] {m['text']!r}: hf={m['hf']} gguf={m['gguf']}")
    for note in report.notes:
        console.print(f"[yellow]{note}[/yellow]")
    verdict = "[green]parity OK[/green]" if report.ok else (
        "[red]parity FAILED[/red]" if report.dtype == "f32" else "(quantized: numbers reported, no threshold)")
    console.print(verdict)
