"""`vlmkit run` end to end: JSON fields, streaming, --chat, --stop, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import vlmkit
from vlmkit.cli import _register, app

_register()
PROMPT = "Tell me a story about a red square."


def invoke(*args: str, stdin: str | None = None):
    result = CliRunner().invoke(app, ["run", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result


def test_json_fields_match_the_api():
    out = invoke("zoo:llama", "--prompt", PROMPT, "--max-new-tokens", "12", "--dtype", "f32", "--json").stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report) >= {"text", "prompt_tokens", "completion_tokens", "time_to_first_token_s", "tokens_per_s",
                           "peak_rss_mb", "finish_reason", "backend"}
    expected = vlmkit.load("zoo:llama", dtype="f32").generate(PROMPT, max_new_tokens=12)
    assert report["text"] == expected.text and report["token_ids"] == expected.token_ids
    assert report["completion_tokens"] == 12 and report["prompt_tokens"] == expected.prompt_tokens


def test_streams_text_and_honours_stop():
    full = vlmkit.load("zoo:llama", dtype="f32").generate(PROMPT, max_new_tokens=16).text
    out = invoke("zoo:llama", "-p", PROMPT, "--max-new-tokens", "16", "--dtype", "f32").stdout
    assert out.rstrip("\n") == full
    stopped = invoke("zoo:llama", "-p", PROMPT, "--max-new-tokens", "16", "--dtype", "f32",
                     "--stop", full[4:7]).stdout
    assert stopped.rstrip("\n") == full[:4]


def test_chat_reads_turns_until_eof():
    out = invoke("zoo:llama", "--chat", "--max-new-tokens", "4", "--json", stdin="Hello!\nAnd then?\n").stdout
    turns = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(turns) == 2 and turns[1]["prompt_tokens"] > turns[0]["prompt_tokens"] + 4


@pytest.mark.parametrize("args, message", [
    (["zoo:llava-clip", "-p", "hi", "--image", "/no/such/cat.png"], "error: /no/such/cat.png: image not found"),
    (["zoo:llama", "-p", "hi", "--temperature", "-1"], "error: bad sampling setting: --temperature must be >= 0"),
])
def test_one_line_errors(args, message):
    proc = subprocess.run([sys.executable, "-m", "vlmkit", "run", *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == message and "Traceback" not in proc.stderr


def test_tokens_per_s_is_null_without_a_decode_interval():
    """One generated token: no interval between tokens to time, so no rate (not 0.0)."""
    one = json.loads(invoke("zoo:llama", "-p", PROMPT, "--max-new-tokens", "1", "--json").stdout.splitlines()[-1])
    assert one["completion_tokens"] == 1 and one["tokens_per_s"] is None
    two = json.loads(invoke("zoo:llama", "-p", PROMPT, "--max-new-tokens", "3", "--json").stdout.splitlines()[-1])
    assert two["completion_tokens"] == 3 and two["tokens_per_s"] > 0
