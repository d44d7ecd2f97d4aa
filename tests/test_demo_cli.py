"""`vlmkit demo` commands through typer's runner: the main job, data and score."""

import json

from typer.testing import CliRunner

from vlmkit.cli import _register, app
from vlmkit.data import load_vqa

_register()
runner = CliRunner()


def test_main_job_answers_about_a_new_scene(tmp_path):
    png = tmp_path / "scene.png"
    result = runner.invoke(app, ["demo", "--seed", "7", "--out", str(png), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["seed"] == 7 and report["image"] == str(png) and png.is_file()
    answers = report["answers"]
    assert {a["lang"] for a in answers} == {"en", "ja"} and len(answers) == 6
    assert all(a["correct"] == (a["answer"] == a["truth"]) for a in answers)


def test_main_job_is_mostly_right_on_new_scenes(tmp_path):
    """Over 10 showcase scenes (60 questions, yes/no and free-form, EN + JA) the demo is right far more
    often than chance (50 % yes/no, 20-25 % free-form); its test-split accuracy is 85-100 % per category."""
    from vlmkit.demo.showcase import run_demo

    answers = [a for seed in range(10) for a in run_demo(seed=seed, out=tmp_path / f"{seed}.png")["answers"]]
    assert sum(a.correct for a in answers) >= 0.8 * len(answers), [(a.question, a.said, a.truth) for a in answers]


def test_main_job_table(tmp_path):
    result = runner.invoke(app, ["demo", "--seed", "3", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "saved to" in result.output and "correct" in result.output and "✓" in result.output


def test_data_writes_loadable_set(tmp_path):
    result = runner.invoke(app, ["demo", "data", "--out", str(tmp_path / "set"), "--n", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert len(load_vqa(json.loads(result.output)["jsonl"])) == 12


def test_score_on_a_written_set(tmp_path):
    runner.invoke(app, ["demo", "data", "--out", str(tmp_path / "set"), "--n", "8"])
    result = runner.invoke(app, ["demo", "score", "demo", "--data", str(tmp_path / "set"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["predictions"]) == 24
    cats = {c["category"]: c for c in report["categories"]}
    assert set(cats) >= {"existence", "count", "color", "position"}
    assert cats["existence"]["questions"] == 4 and cats["existence"]["images"] == 2
