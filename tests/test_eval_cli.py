"""vlmkit eval's command line: help with examples, one-line errors, JSON and text output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("verb", ["compare", "vqa", "perplexity", "speed"])
def test_help_has_an_example(verb):
    done = cli("eval", verb, "--help")
    assert done.returncode == 0 and "Example: vlmkit eval " + verb in done.stdout


def test_missing_text_is_one_line(tmp_path):
    done = cli("eval", "perplexity", "demo", "--data", str(tmp_path / "nope.txt"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "nope.txt" in done.stderr
    assert "Traceback" not in done.stderr


def test_short_text_names_llama_perplexitys_rule(tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("Is there a red square?", encoding="utf-8")
    done = cli("eval", "compare", "demo", "demo", "--data", str(text), "--ctx", "64")
    assert done.returncode == 1 and "needs at least 128" in done.stderr and "Traceback" not in done.stderr


def test_bad_question_set_is_one_line(tmp_path):
    (tmp_path / "questions.jsonl").write_text('{"question_id": "1", "image": "x.png"}\n', encoding="utf-8")
    done = cli("eval", "vqa", "demo", "--data", str(tmp_path))
    assert done.returncode == 1 and "missing field(s)" in done.stderr and done.stderr.count("\n") == 1


def test_perplexity_json_and_same_model_compare():
    done = cli("eval", "perplexity", "demo", "--data", "corpus", "--ctx", "64", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n_chunks"] >= 2 and result["ppl"] > 1 and result["ppl_unc"] > 0
    done = cli("eval", "compare", "demo", "demo", "--data", "corpus", "--ctx", "64", "--json")
    summary = json.loads(done.stdout)["summary"]
    assert summary["kld_mean"] == 0 and summary["same_top"] == 1 and summary["ppl_ref"] == pytest.approx(result["ppl"])


def test_speed_reports_every_field_on_both_backends(tmp_path):
    from vlmkit.convert import convert

    gguf_dir = convert("demo", tmp_path / "f32", dtype="f32", verify=False).model_path.parent
    for model in ("demo", str(gguf_dir)):
        done = cli("eval", "speed", model, "--image", "demo", "--runs", "2", "--max-new-tokens", "4", "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["backend"] == ("transformers" if model == "demo" else "llamacpp")
        assert result["prompt_tokens"] > 16 and result["image_encode_ms"] > 0 and result["peak_rss_mb"] > 0
        assert result["time_to_first_token_ms"] > 0 and result["prefill_tokens_per_s"] > 0
