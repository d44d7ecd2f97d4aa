"""Rough edges a new user meets in the first hour (issue 14, deliverable 6), one test each."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import vlmkit
from vlmkit.cli import _register, app
from vlmkit.errors import VlmkitError

_register()


def cli(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vlmkit", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})}, input=stdin)


@pytest.mark.llamacpp
def test_overwrite_replaces_the_whole_output(tmp_path):
    from vlmkit.convert import convert

    out = tmp_path / "out"
    convert("zoo:llava-clip", out, dtype="f32", verify=False)
    assert (out / "mmproj.gguf").is_file()
    with pytest.raises(VlmkitError, match="not empty \\(use --overwrite\\)"):
        convert("zoo:llama", out, dtype="f32", verify=False)
    convert("zoo:llama", out, dtype="f32", verify=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["model.gguf"]   # the stale mmproj is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp dirs left
    (out / "notes.txt").write_text("mine")
    with pytest.raises(VlmkitError, match="holds other files \\(notes.txt\\)"):
        convert("zoo:llama", out, dtype="f32", verify=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.llamacpp
def test_model_and_mmproj_from_different_conversions_refused(tmp_path):
    from vlmkit.convert import convert

    convert("zoo:llava-clip", tmp_path / "a", dtype="f32", verify=False)
    convert("zoo:llava-clip", tmp_path / "b", dtype="f16", verify=False)
    with vlmkit.load(tmp_path / "a"):   # a matching pair loads
        pass
    shutil.copy(tmp_path / "b" / "mmproj.gguf", tmp_path / "a" / "mmproj.gguf")
    with pytest.raises(VlmkitError, match="comes from another conversion than model.gguf"):
        vlmkit.load(tmp_path / "a")
    proc = cli("run", str(tmp_path / "a"), "-p", "hi")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "another conversion" in proc.stderr


def llama_without_final_norm(zoo, tmp_path):
    """zoo:llama minus ``model.norm.weight``: it converts, transformers loads it (initialising the norm),
    llama.cpp refuses to load the GGUF."""
    from safetensors.torch import load_file, save_file

    model = tmp_path / "llama-no-norm"
    shutil.copytree(zoo("llama"), model)
    tensors = load_file(model / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    return model


@pytest.mark.llamacpp
def test_convert_keeps_its_output_when_a_check_crashes(zoo, tmp_path):
    model = llama_without_final_norm(zoo, tmp_path)
    proc = cli("convert", str(model), "--out", str(tmp_path / "out"), "--dtype", "f32")
    assert proc.returncode == 2, proc.stderr
    assert (tmp_path / "out" / "model.gguf").is_file()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and ".tmp-" not in proc.stderr
    assert lines[0].startswith("warning: the parity check") and "could not run: llama.cpp cannot load this GGUF" \
        in lines[0] and lines[0].endswith(f"the GGUF is written to {tmp_path / 'out'} (unchecked)")
    proc = cli("convert", str(model), "--out", str(tmp_path / "out2"), "--dtype", "f32", "--json")
    import json

    assert proc.returncode == 2 and "could not run" in json.loads(proc.stdout)["verify_error"]


def test_version_and_short_help():
    from vlmkit import __version__

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"vlmkit {__version__}"
    for args in (["-h"], ["run", "-h"], ["demo", "score", "-h"]):
        proc = cli(*args)
        assert proc.returncode == 0 and "Usage:" in proc.stdout, args


def run_in_tty(args: list[str], env: dict) -> str:
    """Output of ``vlmkit ARGS`` with stdout and stderr on a pseudo-terminal (where colour is on)."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "vlmkit", *args], stdout=follower, stderr=follower,
                            env={**os.environ, "TERM": "xterm-256color", **env})
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def colours(text: str) -> set[str]:
    """ANSI SGR colour parameters (foreground / background; bold or italic are not colour)."""
    import re

    params = {p for seq in re.findall(r"\x1b\[([0-9;]*)m", text) for p in seq.split(";")}
    return {p for p in params if p.isdigit() and (30 <= int(p) <= 49 or 90 <= int(p) <= 107)}


def test_no_color_is_honoured():
    args = ["run", "zoo:llama", "-p", "hi", "--top-p", "3"]
    assert colours(run_in_tty(args, {}))               # an error is red on a terminal ...
    plain = run_in_tty(args, {"NO_COLOR": "1"})        # ... and plain with NO_COLOR
    assert not colours(plain) and "error: bad sampling setting" in plain
    assert colours(run_in_tty(["inspect", "demo"], {}))
    assert not colours(run_in_tty(["inspect", "demo"], {"NO_COLOR": "1"}))


@pytest.mark.parametrize("args", [["inspect", "demo"], ["inspect", "demo", "--json"], ["--help"], ["run", "--help"]])
def test_closed_pipe_ends_quietly(args):
    proc = subprocess.run(["bash", "-c", f'"{sys.executable}" -m vlmkit {" ".join(args)} | head -1 >/dev/null; '
                                         'exit "${PIPESTATUS[0]}"'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "zoo:llama", "-p", "hi", "--top-p", "2"], "error: bad sampling setting: --top-p must be in (0, 1]"),
    (["run", "zoo:llama", "-p", "hi", "--max-new-tokens", "0"],
     "error: bad sampling setting: --max-new-tokens must be >= 1"),
    (["run", "zoo:llama", "-p", "hi", "--repetition-penalty", "0"],
     "error: bad sampling setting: --repetition-penalty must be > 0"),
    (["run", "zoo:paligemma", "-p", "caption en"], "PaliGemmaProcessor builds its prompt around an image: give one "
                                                   "with --image"),
    (["run", "zoo:llava-calm2-siglip", "-p", "<image> what is it?"], "error: the prompt contains '<image>', which "
                                                                     "this model reads as an image"),
    (["demo", "--model", "zoo:llama"], "this is a text-only model: it cannot take images"),
    (["demo", "score", "--split", "val"], "error: --split must be train or test, not 'val'"),
    (["convert", "zoo:llama", "--out", "/proc/vlmkit-test/out"], "error: /proc/vlmkit-test/out: cannot write the "
                                                                 "output here"),
])
def test_one_line_errors_name_flags(args, message):
    proc = cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_negative_threads_refused():
    proc = cli("run", "zoo:llama", "-p", "hi", "--threads", "-2")
    assert proc.returncode == 2 and "Invalid value for '--threads'" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(VlmkitError, match="threads must be >= 1"):
        vlmkit.load("zoo:llama", threads=-2)


def test_demo_train_refuses_a_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = cli("demo", "train", "--out", str(tmp_path), "--steps", "1")
    assert proc.returncode == 1 and "--out must be a new or empty directory" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.llamacpp
def test_demo_runs_on_the_demo_gguf(tmp_path):
    """``vlmkit demo --model DIR`` with the demo's GGUF answers through llama.cpp like the HF demo."""
    import json

    from vlmkit.convert import convert

    convert("demo", tmp_path / "gguf", dtype="f32", verify=False)
    answers = []
    for model in ("demo", str(tmp_path / "gguf")):
        proc = cli("demo", "--model", model, "--seed", "5", "--json", "--out", str(tmp_path / "scene.png"))
        assert proc.returncode == 0, proc.stderr
        answers.append([a["answer"] for a in json.loads(proc.stdout)["answers"]])
    assert answers[0] == answers[1] and len(answers[0]) == 6


def test_vila_inspect_finds_the_llm_tokenizer_and_convert_says_one_thing(zoo, tmp_path):
    from vlmkit.convert import convert
    from vlmkit.inspect import inspect_model

    report = inspect_model(zoo("vila"))
    assert report.tokenizer is not None and report.tokenizer.vocab_size == 640
    result = convert(zoo("vila"), tmp_path / "out", dtype="f32", verify=False)
    assert result.mmproj_path is None and not (tmp_path / "out" / "mmproj.gguf").exists()
    assert not any("written to mmproj.gguf" in reason for reason in result.dropped.values())
    assert any("not exported" in reason for reason in result.dropped.values())


def crafted_inputs(zoo, tmp_path) -> dict[str, object]:
    """A config transformers rejects (256 hidden / 3 heads) and a GGUF llama.cpp cannot load."""
    import json

    heads = tmp_path / "bad-heads"
    shutil.copytree(zoo("llama"), heads)
    config = json.loads((heads / "config.json").read_text())
    config.update(num_attention_heads=3, num_key_value_heads=3)
    config.pop("head_dim", None)
    (heads / "config.json").write_text(json.dumps(config))
    gguf_dir = tmp_path / "bad-gguf"
    from vlmkit.convert import convert

    convert(llama_without_final_norm(zoo, tmp_path), gguf_dir, dtype="f32", verify=False)
    return {"hf": heads, "gguf": gguf_dir}


# every verb, with a model that makes transformers (or llama.cpp) raise: a new verb must be added here
VERB_RUNS = {
    "inspect": lambda model, out: [["inspect", model], ["inspect", model, "--memory"]],
    "run": lambda model, out: [["run", model, "-p", "hi"]],
    "convert": lambda model, out: [["convert", model, "--out", str(out)]],
    "demo": lambda model, out: [["demo", "--model", model], ["demo", "score", model, "--n", "1"]],
    "diff": lambda model, out: [["diff", model, model]],
    "eval": lambda model, out: [["eval", "vqa", model, "--limit", "1"], ["eval", "perplexity", model, "--ctx", "16"],
                                ["eval", "compare", model, model, "--ctx", "16"], ["eval", "speed", model, "--runs", "1"]],
    "quantize": lambda model, out: [["quantize", model, "--samples", "2", "--held-out", "1", "--out", str(out)]],
    "serve": lambda model, out: [["serve", model, "--dry-run"]],
}


def test_every_verb_is_in_the_traceback_check():
    verbs = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert verbs == set(VERB_RUNS)


@pytest.mark.llamacpp
def test_no_verb_prints_a_traceback(zoo, tmp_path):
    bad = crafted_inputs(zoo, tmp_path)
    for source, model in bad.items():
        for verb, runs in VERB_RUNS.items():
            for args in runs(str(model), tmp_path / f"out-{source}-{verb}"):
                proc = cli(*args)
                assert "Traceback" not in proc.stderr + proc.stdout, (args, proc.stderr)
                if proc.returncode:
                    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, (args, proc.stderr)


def test_tensor_names_break_only_after_dots_at_80_columns(zoo):
    """On an 80-column terminal every name cell line ends at a dot (or the name's end): joined back, the
    cells give exactly the report's tensor names."""
    import re

    from vlmkit.inspect import inspect_model

    out = re.sub(r"\x1b\[[0-9;]*m", "", run_in_tty(["inspect", "zoo:llava-clip"], {"NO_COLOR": "1", "COLUMNS": "80"}))
    lines = out.replace("\r", "").splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("tensors")):]
    assert all(len(line) <= 80 for line in table)
    names, current = [], ""
    for line in table:
        cells = line.split("│")
        if len(cells) < 3 or cells[1].strip() in ("", "name"):
            continue
        current += cells[1].strip()
        if not current.endswith("."):
            names.append(current)
            current = ""
    expected = [row.pattern for row in inspect_model(zoo("llava-clip")).tensors]
    assert names == expected and max(map(len, expected)) > 60
