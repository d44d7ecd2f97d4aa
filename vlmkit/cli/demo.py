"""``vlmkit demo``: the built-in demo VLM answering questions about a freshly drawn scene.

Sub-commands: ``score`` (MME table on the test split or any VQA set), ``data`` (write a split in the
documented jsonl + images format), ``train`` (retrain the demo model from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vlmkit.cli import app

demo_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(demo_app, name="demo")


@demo_app.callback()
def demo(
    ctx: typer.Context,
    seed: Optional[int] = typer.Option(None, help="Scene seed (default: a new random one each run)."),
    model: str = typer.Option("demo", help="Model directory or 'demo' (the built-in one)."),
    out: Optional[Path] = typer.Option(None, help="Where to save the PNG (default: a temp file)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Draw a new scene, ask the demo VLM about it in English and Japanese, show its answers.

    Sub-commands: score (MME table), data (write the dataset), train (retrain from scratch).

    Example: vlmkit demo --seed 7
    """
    if ctx.invoked_subcommand is not None:
        return
    from vlmkit.demo.showcase import run_demo

    result = run_demo(seed=seed, model=model, out=out)
    answers = result["answers"]
    if as_json:
        rows = [{"question": a.question, "answer": a.said, "truth": a.truth, "correct": a.correct,
                 "category": a.category, "lang": a.lang} for a in answers]
        typer.echo(json.dumps({"seed": result["seed"], "image": str(result["image"]), "answers": rows},
                              ensure_ascii=False, indent=2))
        return
    _print_demo(result)


def _print_demo(result: dict) -> None:
    from rich.table import Table

    from vlmkit.cli import console as make_console

    console = make_console()
    console.print(f"scene (seed {result['seed']}) saved to [bold]{result['image']}[/bold]")
    table = Table(title="demo VLM answers")
    for column in ("question", "model", "truth", ""):
        table.add_column(column)
    for a in result["answers"]:
        table.add_row(a.question, a.said, a.truth, "[green]✓[/green]" if a.correct else "[red]✗[/red]")
    console.print(table)
    right = sum(a.correct for a in result["answers"])
    console.print(f"{right}/{len(result['answers'])} correct")


@demo_app.command("score")
def score_cmd(
    model: str = typer.Argument("demo", help="Model directory, hub id or 'demo'."),
    split: str = typer.Option("test", help="Demo split to score: test or train."),
    n: Optional[int] = typer.Option(None, help="Number of images (default: the full test split, 200)."),
    split_seed: int = typer.Option(0, "--seed", help="Split seed: 0 is the README's test split; train + 1 is validation."),
    data: Optional[Path] = typer.Option(None, help="Score a VQA set in the jsonl format instead of a demo split."),
    mme_phrasing: bool = typer.Option(False, "--mme-phrasing",
                                      help="End each question with MME's 'Please answer yes or no.' (Japanese: "
                                           "「はい」か「いいえ」で答えてください。) or the short-answer request."),
    backend: str = typer.Option("auto", help="auto (GGUF -> llamacpp, else transformers), transformers or llamacpp."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with every prediction)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown (the README's)."),
    download: bool = typer.Option(False, help="Fetch a hub id that is not in the local HF cache."),
) -> None:
    """MME table (acc, acc+, score per category) from greedy answers.

    Example: vlmkit demo score --markdown            # reproduces the README table
    Example: vlmkit demo score --mme-phrasing --markdown    # the README's table for questions asked MME's way
    Example: vlmkit convert demo --out q8 --dtype q8_0 && vlmkit demo score q8    # the same through llama.cpp
    Example: vlmkit demo score demo --data my_set/ --json
    """
    from vlmkit.api import gguf_files
    from vlmkit.eval.vqa import evaluate, markdown_table, set_questions, split_questions
    from vlmkit.hub import resolve_model

    _check_split(split)
    path = resolve_model(model, download=download)
    if backend == "auto":
        backend = "llamacpp" if gguf_files(path) is not None else "transformers"
    questions = set_questions(data) if data else split_questions(split, n, split_seed, mme_phrasing)
    result = evaluate(questions, path, backend=backend)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    if markdown:
        typer.echo(markdown_table(result))
        return
    _print_scores(result, str(data) if data else f"demo {split} split")


def _print_scores(result: dict, source: str) -> None:
    from rich.table import Table

    from vlmkit.cli import console as make_console
    from vlmkit.eval.vqa import SCORE_COLUMNS, score_rows

    table = Table(title=f"MME-style scores on the {source}")
    for column in SCORE_COLUMNS:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in score_rows(result):
        table.add_row(*row)
    make_console().print(table)


@demo_app.command("data")
def data_cmd(
    out: Path = typer.Option(..., help="New directory for questions.jsonl and images/."),
    split: str = typer.Option("test", help="train or test."),
    n: int = typer.Option(200, help="Number of images (3 questions each)."),
    seed: int = typer.Option(0, help="Split seed (the test split the README scores is seed 0)."),
    mme_phrasing: bool = typer.Option(False, "--mme-phrasing",
                                      help="End each question with the benchmark's request (MME's 'Please answer yes or no.')."),
    as_json: bool = typer.Option(False, "--json", help="Print the jsonl path as JSON."),
) -> None:
    """Write a demo split as a VQA set: questions.jsonl (question_id, image, question, answer, category, lang) + images/.

    Example: vlmkit demo data --out /tmp/demo-test --split test --n 200
    """
    from vlmkit.demo.dataset import write_split

    _check_split(split)
    path = write_split(out, split, n, seed, mme_phrasing)
    typer.echo(json.dumps({"jsonl": str(path)}) if as_json else f"wrote {path}")


def _check_split(split: str) -> None:
    from vlmkit.demo.dataset import SPLITS
    from vlmkit.errors import VlmkitError

    if split not in SPLITS:
        raise VlmkitError(None, f"--split must be {' or '.join(SPLITS)}, not {split!r}")


@demo_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., help="New output directory (the shipped weights are never overwritten)."),
    seed: int = typer.Option(0, help="Training seed; the same seed gives the same weights."),
    stage: Optional[int] = typer.Option(None, help="Run one stage only: 1 (from scratch), 2 or 3 (need --init)."),
    init: Optional[Path] = typer.Option(None, help="With --stage 2 or 3: the model to continue from (the stage before's output)."),
    steps: Optional[int] = typer.Option(None, help="With --stage: optimizer steps (default: the stage's)."),
    snapshots: Optional[Path] = typer.Option(None, help="Also save the model every 1,000 steps under DIR/stepN."),
) -> None:
    """Retrain the demo VLM from scratch on CPU: stage 1 (plain questions, about 28 minutes alone on 2 cores), then
    stage 2 (benchmark phrasings and big shapes, about 25 minutes) and stage 3 (more position questions, about
    13 minutes), each continuing from the one before.

    Example: vlmkit demo train --out /tmp/demo-retrained
    Example: vlmkit demo train --stage 2 --init /tmp/stage1 --out /tmp/stage2 --snapshots /tmp/snaps
    """
    from vlmkit.demo.train import train_stages
    from vlmkit.errors import VlmkitError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VlmkitError(out, "--out must be a new or empty directory (training writes a whole model there)")
    train_stages(out, seed, snapshots, stage, init, steps)
