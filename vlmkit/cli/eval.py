"""``vlmkit eval``: compare, vqa, perplexity, speed — thin wrappers over :mod:`vlmkit.eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vlmkit.cli import app

eval_app = typer.Typer(no_args_is_help=True, help="Judge a model: against another one, on a VQA set, on text, for speed.")
app.add_typer(eval_app, name="eval")

Backend = Annotated[str, typer.Option(help="auto (GGUF -> llamacpp, HF directory -> transformers) or a backend name.")]
Threads = Annotated[Optional[int], typer.Option(help="CPU threads.")]
Verbose = Annotated[bool, typer.Option(help="Show third-party logs and tracebacks.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Report = Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML report here.")]
Download = Annotated[bool, typer.Option(help="Fetch a hub id that is not in the local HF cache.")]


def _echo_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=float))


@eval_app.command("compare", epilog="Example: vlmkit eval compare ./llama out-f32/ --data wiki.txt --ctx 512   ·   "
                                    "vlmkit eval compare demo demo-q4/ --data demo --report q4.html")
def compare_command(
    ref: Annotated[str, typer.Argument(help="Reference model (HF directory, GGUF, hub id, demo, zoo:<name>).")],
    cand: Annotated[str, typer.Argument(help="Candidate model scored against it.")],
    data: Annotated[str, typer.Option(help="A text file, 'corpus' (built-in text), 'demo' or a questions.jsonl set.")] = "corpus",
    ctx: Annotated[int, typer.Option(help="Text chunk length (llama-perplexity's -c).")] = 512,
    limit: Annotated[Optional[int], typer.Option(help="Image sets: score the first N questions.")] = None,
    ref_backend: Backend = "auto", cand_backend: Backend = "auto", threads: Threads = None,
    as_json: AsJson = False, report: Report = None, verbose: Verbose = False, download: Download = False,
) -> None:
    """KL divergence, PPL ratio, Δp and same-top-p of CAND against REF on the same token ids (llama-perplexity's
    statistics and chunking); tokenizer and image-embedding agreement."""
    from vlmkit.eval.compare import compare
    from vlmkit.metrics.kld import format_summary

    result = compare(ref, cand, data, ctx, limit, ref_backend, cand_backend, threads, progress=not as_json,
                     verbose=verbose, download=download)
    if report:
        from vlmkit.eval.report import write_report

        write_report(report, f"{cand} against {ref}", compare=result)
    if as_json:
        _echo_json(result.as_dict())
        return
    typer.echo(f"{result.summary.n_tokens} tokens scored on {data}\n{format_summary(result.summary)}")
    tok = result.tokenizer
    typer.echo(f"tokenizers: {tok['n_same']}/{tok['n_texts']} texts give the same ids")
    if result.image_embeddings:
        typer.echo(f"image embeddings: {json.dumps(result.image_embeddings)}")
    for note in result.notes:
        typer.echo(f"note: {note}")


@eval_app.command("vqa", epilog="Example: vlmkit eval vqa demo --markdown   ·   vlmkit eval vqa q4/ --out q4.jsonl "
                                "--against f16.jsonl   ·   vlmkit eval vqa ./model --data my_set/ --limit 100")
def vqa_command(
    model: Annotated[str, typer.Argument(help="Model (HF directory, GGUF, hub id, demo).")],
    data: Annotated[str, typer.Option(help="'demo' (the demo's test split, 600 questions), 'demo-mme' (the same, each "
                                                "question ending in MME's 'Please answer yes or no.'), 'demo-large' (the "
                                                "test split at 6,000 questions) or a questions.jsonl / its directory.")] = "demo",
    backend: Backend = "auto",
    limit: Annotated[Optional[int], typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Answers jsonl; a rerun resumes from it.")] = None,
    against: Annotated[Optional[Path], typer.Option(help="Another run's answers jsonl: changed answers + McNemar test.")] = None,
    batch_size: Annotated[int, typer.Option(help="Questions per batch (transformers; 1 = one at a time).")] = 50,
    markdown: Annotated[bool, typer.Option(help="Print the score table as Markdown (the README's).")] = False,
    threads: Threads = None, as_json: AsJson = False, report: Report = None, verbose: Verbose = False,
    download: Download = False,
) -> None:
    """Answer a VQA set greedily and score it MME's way (acc, acc+, score per category; perception /
    cognition sums for MME's categories); warns when the set overlaps the model's calibration record."""
    from vlmkit.eval.vqa import markdown_table, run_vqa

    result = run_vqa(model, data, backend, limit, out, against, threads, progress=not (as_json or markdown),
                     batch_size=batch_size, verbose=verbose, download=download)
    if report:
        from vlmkit.eval.report import write_report

        write_report(report, f"{model} on {data}", vqa={str(model): result})
    overlap = result["calibration_overlap"]
    if overlap and overlap["overlapping"]:
        typer.secho(f"warning: {overlap['overlapping']} of {overlap['evaluated']} questions were in the model's "
                    f"calibration set ({overlap['file']}): the score overstates it", fg=typer.colors.YELLOW, err=True)
    if as_json:
        _echo_json(result)
    elif markdown:
        typer.echo(markdown_table(result))
    else:
        _print_vqa(result)


def _print_vqa(result: dict) -> None:
    from rich.table import Table

    from vlmkit.cli import console as make_console
    from vlmkit.eval.vqa import SCORE_COLUMNS, score_rows

    console = make_console()
    table = Table(title=f"{result['model']} on {result['data']} (MME rules)")
    for column in SCORE_COLUMNS:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in score_rows(result):
        table.add_row(*row)
    console.print(table)
    for name in ("perception", "cognition"):
        if name in result:
            console.print(f"MME {name}: {result[name]:.2f}")
    if "against" in result:
        _print_against(console, result["against"])


def _print_against(console: Any, against: dict) -> None:
    test = against["mcnemar"]
    verdict = "a real difference" if test["significant_at_5pct"] else "within noise"
    console.print(f"{len(against['changed'])} of {against['paired_questions']} answers changed: "
                  f"{test['only_second']} now right, {test['only_first']} now wrong; exact McNemar p = "
                  f"{test['p_value']:.3g} ({verdict} at 5 %)")
    for row in against["changed"][:20]:
        console.print(f"  {row['question']!r}: {row['before']!r} -> {row['after']!r} (truth {row['answer']!r})")


@eval_app.command("perplexity", epilog="Example: vlmkit eval perplexity out/model.gguf --data wiki.test.raw --ctx 512")
def perplexity_command(
    model: Annotated[str, typer.Argument(help="Model (HF directory, GGUF, hub id, demo, zoo:<name>).")],
    data: Annotated[str, typer.Option(help="A UTF-8 text file, or 'corpus' (built-in text).")] = "corpus",
    ctx: Annotated[int, typer.Option(help="Chunk length (llama-perplexity's -c).")] = 512,
    backend: Backend = "auto", threads: Threads = None, as_json: AsJson = False, verbose: Verbose = False,
    download: Download = False,
) -> None:
    """Perplexity with llama-perplexity's chunking (second half of each chunk scored)."""
    from vlmkit.eval.perplexity import perplexity

    result = perplexity(model, data, ctx, backend, threads, verbose, download)
    if as_json:
        _echo_json(result.as_dict())
    else:
        typer.echo(f"PPL = {result.ppl:.4f} +/- {result.ppl_unc:.5f} ({result.n_tokens} tokens, "
                   f"{result.n_chunks} chunks of {result.ctx})")


@eval_app.command("speed", epilog="Example: vlmkit eval speed demo --image scene.png   ·   vlmkit eval speed q4/ --runs 9 --json")
def speed_command(
    model: Annotated[str, typer.Argument(help="Model (HF directory, GGUF, hub id, demo, zoo:<name>).")],
    image: Annotated[Optional[str], typer.Option(help="An image file, or 'demo' for a demo scene.")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs (the median is reported; one warm-up run before).")] = 5,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per run.")] = 32,
    backend: Backend = "auto", threads: Threads = None, as_json: AsJson = False, report: Report = None,
    verbose: Verbose = False, download: Download = False,
) -> None:
    """Time to first token, prefill and decode tokens/s, image-encode ms, peak RSS (median of N runs)."""
    from vlmkit.eval.speed import measure

    picture = _demo_scene() if image == "demo" else image
    result = measure(model, picture, runs, max_new_tokens, backend, threads, verbose, download)
    if report:
        from vlmkit.eval.report import write_report

        write_report(report, f"speed of {model}", speed=[result])
    if as_json:
        _echo_json(result.as_dict())
        return
    for name, value in result.as_dict().items():
        typer.echo(f"{name:>24}: {value}")


@eval_app.command(
    "lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="Example: vlmkit eval lm-eval --model vlmkit --model_args model=out/model.gguf,backend=llamacpp "
           "--tasks hellaswag   ·   vlmkit eval lm-eval --model vlmkit --model_args model=demo --tasks my_task "
           "--include_path ./tasks   ·   vlmkit eval lm-eval -- --help (lm-eval's own options)")
def lm_eval_command(ctx: typer.Context) -> None:
    """lm-evaluation-harness's command line (``lm_eval ARGS``, every argument passed through) with the model
    ``vlmkit`` registered: --model_args model=PATH|demo|zoo:NAME,backend=auto|transformers|llamacpp,threads=N."""
    from vlmkit.eval.lm_eval_model import run_command_line

    run_command_line(list(ctx.args))


def _demo_scene() -> Any:
    import random

    from vlmkit.demo.scenes import random_scene, render

    return render(random_scene(random.Random("vlmkit-eval-speed")))
