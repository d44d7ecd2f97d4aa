"""``vlmkit quantize``: a thin wrapper over :func:`vlmkit.quant.pipeline.quantize`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from vlmkit.cli import app


@app.command(
    "quantize",
    epilog="Example: vlmkit quantize demo --method gptq --bits 4 --calib demo --out demo-w4   ·   "
           "vlmkit quantize ./llava-calm2-siglip --method awq --calib ./vqa --format both --gguf-type q4_k_m "
           "--out out --json",
)
def quantize_command(
    model: Annotated[str, typer.Argument(help="Directory, hub id, 'demo' or 'zoo:<name>'.")],
    out: Annotated[str, typer.Option("--out", help="Output directory (appears complete or not at all).")],
    method: Annotated[str, typer.Option(help="rtn | awq | gptq")] = "gptq",
    bits: Annotated[int, typer.Option(help="Weight bits: 4 or 8 (activations stay 16/32-bit).")] = 4,
    group_size: Annotated[int, typer.Option(
        help="Columns per scale; 0 = one scale per output channel. A width it does not divide falls back to "
             "per-channel scales for that Linear.")] = 128,
    sym: Annotated[bool, typer.Option("--sym/--asym", help=(
        "Symmetric (no zero point) or asymmetric grid. --asym: transformers decompresses the export while loading "
        "(dequantize: true), vLLM runs it packed; GGUF Q4_0 / Q8_0 cannot hold zero points (requantized).")
    )] = True,
    calib: Annotated[str, typer.Option(
        help="'demo', a questions.jsonl folder (image questions), or a .txt / .jsonl of texts.")] = "demo",
    samples: Annotated[int, typer.Option(help="Calibration samples.")] = 64,
    held_out: Annotated[int, typer.Option(help="Held-out samples for the quality report.")] = 16,
    format: Annotated[str, typer.Option("--format", help="hf (compressed-tensors) | gguf | both")] = "hf",
    gguf_type: Annotated[str | None, typer.Option(
        help="q4_0 / q8_0 (the method's integers written exactly at --group-size 32) or q4_k_m, q5_k_m, "
             "q6_k (llama.cpp's quantizer, from the AWQ-folded float weights with an importance matrix from "
             "this calibration, also written as imatrix.gguf; f32 / f16: that float model). "
             "Default: q4_0 for 4 bits, q8_0 for 8.")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Regex: also quantize matching Linears.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Regex: keep matching Linears.")] = None,
    act_order: Annotated[bool, typer.Option(help="GPTQ: quantize columns in activation order.")] = False,
    scale_search: Annotated[bool, typer.Option(
        help="GPTQ: each group's min/max range shrunk (1 ... 0.8) to the lowest rounding error; "
             "--no-scale-search: plain min/max, as llm-compressor's default.")] = True,
    awq_clip: Annotated[bool, typer.Option(
        help="AWQ: also AutoAWQ's weight-clipping search after the scales (llm-compressor's AWQ has none).")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    verbose: Annotated[bool, typer.Option(help="Show third-party logs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Quantize a Hugging Face LLM / LLaVA-style VLM (RTN, AWQ or GPTQ, calibrated on image+text) and report
    what it cost."""
    from vlmkit.quant.pipeline import quantize

    result = quantize(model, out, method=method, bits=bits, group_size=group_size, symmetric=sym, calib=calib,
                      samples=samples, format=format, gguf_type=gguf_type, include=tuple(include or ()),
                      exclude=tuple(exclude or ()), act_order=act_order, held_out=held_out, overwrite=overwrite,
                      progress=not as_json, verbose=verbose, threads=threads, awq_clip=awq_clip,
                      scale_search=scale_search)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
        return
    from vlmkit.cli import console
    from vlmkit.cli.quantize_view import render

    render(result, console())
