"""Rich rendering of a :class:`vlmkit.inspect.ModelReport` (tables a person reads; ``--json`` for scripts)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from vlmkit.cli import console as make_console
from vlmkit.inspect import ModelReport


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def render(report: ModelReport, *, show_tensors: bool = True, depth: int = 4, console: Console | None = None) -> None:
    console = console or make_console()
    family = report.family + (" (guessed from tensor names)" if report.family_guessed else "")
    console.print(f"[bold]{report.path}[/]  ({report.format}, {len(report.files)} file(s))")
    console.print(f"architecture: {', '.join(report.architectures) or '-'}   model_type: {report.model_type or '-'}"
                  f"   family: {family}" + ("   [yellow]custom code (not executed)[/]" if report.custom_code else ""))
    console.print(f"parameters: [bold]{report.params:,}[/] ({human_count(report.params)})   "
                  f"size: {human_bytes(report.bytes)}   dtypes: "
                  + ", ".join(f"{d} {human_count(v['params'])}" for d, v in report.dtypes.items()))
    if report.quantization:
        console.print(_quantization(report.quantization))
    console.print(_components(report))
    if report.tied:
        console.print("tied: " + ", ".join(f"{a} = {b}" for a, b in report.tied.items()))
    if report.buffers:
        console.print(f"buffers (not parameters): {len(report.buffers)}, e.g. {report.buffers[0]}")
    for old, new in report.layout_faults.items():
        console.print(f"[yellow]layout: {old}* is not loaded by every runtime (vLLM wants {new}*); "
                      f"fix: vlmkit convert {report.path} --to hf --out DIR[/]")
    if report.config:
        console.print("config: " + ", ".join(f"{k}={v}" for k, v in report.config.items()))
    _tokenizer(report, console)
    if report.memory:
        console.print(_memory(report.memory))
    if report.tree:
        console.print(f"[bold]module tree[/] (from {report.tree['source']})")
        console.print(_tree(report.tree["root"], depth))
    if show_tensors:
        console.print(_tensors(report, console.width))


def _quantization(quant: dict[str, Any]) -> str:
    """One line: the compressed-tensors scheme(s), how many Linears are packed and how many names are kept."""
    schemes = []
    for s in quant["schemes"]:
        size = f"group {s['group_size']}" if s["strategy"] == "group" else (s["strategy"] or "?")
        grid = {True: "symmetric", False: "asymmetric"}.get(s["symmetric"], "symmetric?")
        schemes.append(f"{s['type'] or 'int'}{s['num_bits']} weights, {size}, {grid}"
                       + (", quantized activations" if s["activations"] else ""))
    return (f"quantization: {quant['quant_method']} {quant['format'] or ''}: " + "; ".join(schemes)
            + (f"   packed Linears: {quant['packed_linears']} (counted at their logical shapes)"
               if not quant["packed_as_stored"] else
               f"   [yellow]{quant['packed_as_stored']} weight_packed tensors counted as stored (no "
               "pack-quantized scheme of one bit width in config.json)[/]")
            + f"   ignore list: {quant['ignore']} names")


def _components(report: ModelReport) -> Table:
    table = Table(title="components", title_justify="left")
    for column in ("component", "parameters", "share", "bytes", "tensors", "layers"):
        table.add_column(column, justify="left" if column == "component" else "right")
    for c in report.components:
        share = c.params / report.params if report.params else 0
        table.add_row(c.name, f"{c.params:,}", f"{share:.1%}", human_bytes(c.bytes), str(c.tensors),
                      str(c.layers) if c.layers else "")
    return table


def _tokenizer(report: ModelReport, console: Console) -> None:
    tok = report.tokenizer
    if tok is None:
        console.print("tokenizer: none found")
        return
    specials = ", ".join(f"{k}={v!r}" for k, v in tok.special_tokens.items())
    console.print(f"tokenizer: {tok.kind} ({tok.tokenizer_class or '-'}), vocab {tok.vocab_size:,}"
                  f" ({tok.added_tokens} added), chat template: {'yes' if tok.chat_template else 'no'}"
                  + (f", {specials}" if specials else ""))


def _memory(memory: dict[str, Any]) -> Table:
    table = Table(title="memory to load (weights only; activations and KV cache excluded)", title_justify="left")
    for column in ("scheme", "total", "largest tensor"):
        table.add_column(column, justify="left" if column == "scheme" else "right")
    for row in memory["inference"]:
        table.add_row(row["scheme"], human_bytes(row["bytes"]), human_bytes(row["largest_tensor_bytes"]))
    for row in memory.get("run", []):   # predicted peak RSS, everything included
        table.add_row(f"vlmkit run, llama.cpp {row['scheme']}: peak RSS (one image, 64 tokens)",
                      human_bytes(row["bytes"]), "")
    for name, size in memory["training"].items():
        table.add_row(f"train: {name}", human_bytes(size), "")
    return table


def _tree(node: dict[str, Any], depth: int, parent: Tree | None = None) -> Tree:
    repeat = f" × {node['repeat']}" if node["repeat"] > 1 else ""
    kind = f" ({node['kind']})" if node["kind"] else ""
    label = f"{node['name']}{kind}{repeat}: {node['params']:,}"
    branch = parent.add(label) if parent is not None else Tree(label)
    if depth > 0:
        for child in node["children"]:
            _tree(child, depth - 1, branch)
    return branch


TENSOR_COLUMNS = ("name", "shape", "dtype", "count", "component")


def _tensors(report: ModelReport, width: int) -> Table:
    """The tensor table; names that do not fit their column are broken after a dot, never inside a
    word (rich would fold ``self_attn`` into ``se`` / ``lf_attn``)."""
    rows = [(row.pattern, str(list(row.shape)), row.dtype.lower(), f"×{row.count}" if row.count > 1 else "",
             row.component) for row in report.tensors]
    others = sum(max([len(column), *(len(r[i]) for r in rows)]) for i, column in enumerate(TENSOR_COLUMNS) if i)
    name_width = max(16, width - others - 3 * len(TENSOR_COLUMNS) - 1)   # cell padding 2 + one border each
    table = Table(title="tensors", title_justify="left")
    table.add_column("name", overflow="fold", ratio=1)
    for column in TENSOR_COLUMNS[1:]:
        table.add_column(column, justify="right" if column == "count" else "left", no_wrap=True)
    mapped = any(row.hf_name for row in report.tensors)
    if mapped:  # big_vision names beside the HF names they become; the two share the free width
        table.add_column("becomes (HF)", overflow="fold", ratio=1)
        name_width = max(16, (name_width - 3) // 2)
    for (name, *rest), row in zip(rows, report.tensors):
        hf_name = [break_at_dots(row.hf_name or "-", name_width)] if mapped else []
        table.add_row(break_at_dots(name, name_width), *rest, *hf_name)
    return table


def break_at_dots(name: str, width: int) -> str:
    """``name`` as lines of at most ``width`` characters, split after dots (or big_vision's slashes; a
    part longer than ``width`` keeps its own line, folded by rich as a last resort)."""
    import re

    lines, line = [], ""
    for part in re.split(r"(?<=[./])", name):
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "\n".join([*lines, line])
