"""vlmkit eval vqa: the README's demo tables on both backends, resuming, --against, calibration overlap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlmkit.convert import convert
from vlmkit.eval.vqa import load_questions, markdown_table, read_answers, run_vqa

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_backend_table() -> dict[str, dict[str, float]]:
    """The README's "same questions through llama.cpp" table: {column: {category: acc}}."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| category | transformers |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    table: dict[str, dict[str, float]] = {name: {} for name in header[1:]}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name, cell in zip(header[1:], cells[1:]):
            table[name][cells[0]] = float(cell)
    return table


def _accuracies(result: dict) -> dict[str, float]:
    out = {c["category"]: round(c["acc"], 2) for c in result["categories"]}
    out["MME total (yes/no)"] = round(result["total"], 2)
    return out


@pytest.mark.llamacpp
@pytest.mark.parametrize("dtype", ["f32", pytest.param("q4_k_m", marks=pytest.mark.slow)])
def test_readme_tables_on_llamacpp(dtype, tmp_path):
    """`vlmkit eval vqa` of the converted demo on llama.cpp reproduces the README's column; at f32 also the
    README's main score table (the same 600 answers as transformers)."""
    gguf_dir = convert("demo", tmp_path / dtype, dtype=dtype, verify=False).model_path.parent
    result = run_vqa(gguf_dir, "demo", backend="llamacpp", progress=False)
    expected = readme_backend_table()[f"llama.cpp {dtype}"]
    assert _accuracies(result) == {k: v for k, v in expected.items() if not k.startswith("same answer")}
    if dtype == "f32":
        readme = README.read_text(encoding="utf-8")
        assert markdown_table(result) == readme.split("<!-- demo-scores -->\n")[1].split("\n<!-- /demo-scores -->")[0]


def test_resumes_from_a_partial_answers_file(tmp_path):
    out = tmp_path / "answers.jsonl"
    first = run_vqa("demo", "demo", limit=8, out=out, progress=False)
    assert first["resumed"] == 0 and len(read_answers(out)) == 8
    lines = out.read_text(encoding="utf-8").splitlines()
    partial = out.with_name(out.name + ".partial")
    partial.write_text("\n".join(lines[:5]) + "\n" + lines[5][:17], encoding="utf-8")  # torn last line
    out.unlink()
    again = run_vqa("demo", "demo", limit=8, out=out, progress=False)
    assert again["resumed"] == 5 and not partial.exists()
    assert [r["prediction"] for r in again["predictions"]] == [r["prediction"] for r in first["predictions"]]
    assert len(read_answers(out)) == 8


def test_against_lists_changes_and_tests_them(tmp_path):
    base = tmp_path / "base.jsonl"
    result = run_vqa("demo", "demo", limit=12, out=base, progress=False)
    rows = read_answers(base)
    flipped = 0
    for row in rows:  # a worse "other run": every right yes/no answer of the first 6 turned around
        if flipped < 6 and row["prediction"] in ("Yes", "No") and row["prediction"] == row["answer"]:
            row["prediction"] = "No" if row["prediction"] == "Yes" else "Yes"
            flipped += 1
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    against = run_vqa("demo", "demo", limit=12, out=base, against=other, progress=False)["against"]
    assert against["paired_questions"] == 12 and len(against["changed"]) == flipped == 6
    test = against["mcnemar"]
    assert (test["only_first"], test["only_second"]) == (0, 6)  # wrong before, right now: 6; the reverse: 0
    assert test["p_value"] == pytest.approx(2 / 64) and result["total"] >= 0


def test_warns_when_the_set_overlaps_the_calibration_record(tmp_path):
    from typer.testing import CliRunner

    from vlmkit.cli import _register, app
    from vlmkit.data.calibration import write_fingerprints
    from vlmkit.hub import resolve_model

    model = tmp_path / "model"
    shutil.copytree(resolve_model("demo"), model)
    questions = load_questions("demo", 6)
    write_fingerprints(model, [(q.image, q.question) for q in questions[:4]], method="test")
    assert run_vqa(model, "demo", limit=6, progress=False)["calibration_overlap"]["overlapping"] == 4
    _register()
    done = CliRunner().invoke(app, ["eval", "vqa", str(model), "--limit", "6", "--json"])
    assert done.exit_code == 0, done.output
    assert "4 of 6 questions were in the model's calibration set" in done.output
    assert run_vqa("demo", "demo", limit=2, progress=False)["calibration_overlap"] is None  # no record: no warning


def test_bad_answers_file_is_one_line_error(tmp_path):
    from vlmkit.errors import VlmkitError

    bad = tmp_path / "a.jsonl"
    bad.write_text('{"question_id": 1}\n{"x": 2}\n', encoding="utf-8")
    with pytest.raises(VlmkitError, match="not an answers line"):
        read_answers(bad)
