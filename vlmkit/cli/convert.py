"""``vlmkit convert``: a thin wrapper over :func:`vlmkit.convert.convert`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from vlmkit.cli import app


@app.command(
    "convert",
    epilog="Example: vlmkit convert zoo:llava-calm2-siglip --to gguf --out out/ --dtype q4_k_m   ·   "
           "vlmkit convert ./opencalm --out out/ --dtype f32 --json   ·   "
           "vlmkit convert ./llava --out q/ --dtype q4_k_m --imatrix demo-w4/imatrix.gguf   ·   "
           "vlmkit convert ./llava --out q8v/ --dtype q4_k_m --mmproj-dtype q8_0   ·   "
           "vlmkit convert paligemma.npz --to hf --out pg-hf/ --config paligemma-3b-pt-224 --tokenizer tokenizer.model"
           "   ·   vlmkit convert pg-hf/ --to big_vision --out paligemma.npz"
           "   ·   vlmkit convert ./llava-saved-by-transformers5 --to hf --out fixed/",
)
def convert_command(
    model: Annotated[str, typer.Argument(help="Directory, big_vision .npz, hub id, 'demo' or 'zoo:<name>'.")],
    out: Annotated[str, typer.Option("--out", help="Output directory: model.gguf (+ mmproj.gguf for VLMs) or the "
                                                   "HF checkpoint; for --to big_vision the .npz file.")],
    to: Annotated[Optional[str], typer.Option(
        "--to", help="Target format: gguf | hf (from big_vision .npz; from HF: the tensor names vLLM and "
                     "transformers 4/5 all load) | big_vision. "
                     "Default: gguf for HF models, hf for a big_vision .npz.")] = None,
    config: Annotated[Optional[str], typer.Option(
        help="big_vision -> hf: config.json, or a preset (paligemma-3b-pt-224, paligemma2-10b-pt-448 ...); "
             "default: inferred from the array shapes.")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(
        help="big_vision -> hf: tokenizer.model for the processor files (default: one beside the .npz).")] = None,
    dtype: Annotated[str, typer.Option(
        help="f32 | f16 | bf16 | q8_0 | q4_0 | q4_k_m | q5_k_m | q6_k (quantized through llama.cpp); "
             "fp16, float16, Q4_K_M ... are accepted too.")] = "f16",
    imatrix: Annotated[Optional[str], typer.Option(
        help="Importance matrix for the quantized types, as llama-quantize --imatrix takes it (llama-imatrix's "
             "GGUF or legacy .dat, or the imatrix.gguf vlmkit quantize writes from image+text calibration).")] = None,
    mmproj_dtype: Annotated[Optional[str], typer.Option(
        "--mmproj-dtype",
        help="f16 | q8_0 | f32 | bf16 for a VLM's mmproj.gguf (vision tower + projector). Default: the LM's "
             "float type, f16 for a quantized LM. q8_0: half the size of f16; weights whose rows are not "
             "whole 32-wide blocks stay f16 (--json: mmproj_kept).")] = None,
    verify: Annotated[Optional[bool], typer.Option(
        "--verify/--no-verify",
        help="Parity report vs transformers (default: on when llama-cpp-python is installed).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace files in a non-empty --out.")] = False,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for quantizing and verifying.", min=1)] = None,
    download: Annotated[bool, typer.Option(help="Fetch a hub id that is not in the local HF cache.")] = False,
    verbose: Annotated[bool, typer.Option(help="Show llama.cpp's own log.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Convert a Hugging Face LLM / LLaVA-style VLM to GGUF for llama.cpp (and prove the result matches),
    a big_vision PaliGemma .npz to Hugging Face, or back."""
    from vlmkit.convert import convert

    result = convert(model, out, to=to, dtype=dtype, verify=verify, threads=threads, verbose=verbose,
                     overwrite=overwrite, config=config, tokenizer=tokenizer, download=download, imatrix=imatrix,
                     mmproj_dtype=mmproj_dtype)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    else:
        from vlmkit.cli.convert_view import render

        render(result)
    if getattr(result, "verify_error", None):
        typer.secho(f"warning: {result.verify_error}; the GGUF is written to {out} (unchecked)",
                    fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(2)
    report = getattr(result, "verify", None)
    if report is not None and result.dtype == "f32" and not report.ok:
        raise typer.Exit(2)
