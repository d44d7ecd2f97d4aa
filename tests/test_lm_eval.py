"""The lm-eval model ``vlmkit`` on a tiny local task (YAMLs + jsonl written here, no download): the same
numbers as lm-eval's own ``hf`` model on transformers, and on llama.cpp through an f32 GGUF; both
loglikelihood (multiple choice), loglikelihood_rolling (perplexity) and generate_until."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmkit.convert import convert
from vlmkit.zoo.corpus import ENGLISH

pytestmark = pytest.mark.llamacpp
TASKS = ["vlmkit_tiny_mc", "vlmkit_tiny_ppl", "vlmkit_tiny_gen"]


def write_tasks(root: Path) -> Path:
    rows = [{"question": f"Q: {s[:-1]}? A:", "choices": [" yes", " no", " maybe"], "label": i % 2,
             "answer": " yes", "text": s} for i, s in enumerate(ENGLISH[:12])]
    root.mkdir(parents=True, exist_ok=True)
    data = root / "tiny.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "mc.yaml").write_text(
        f"task: vlmkit_tiny_mc\n{common}output_type: multiple_choice\ndoc_to_text: '{{{{question}}}}'\n"
        "doc_to_target: '{{label}}'\ndoc_to_choice: '{{choices}}'\nmetric_list:\n  - metric: acc\n")
    (root / "ppl.yaml").write_text(
        f"task: vlmkit_tiny_ppl\n{common}output_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        "doc_to_target: '{{text}}'\nmetric_list:\n  - metric: word_perplexity\n  - metric: bits_per_byte\n")
    (root / "gen.yaml").write_text(
        f"task: vlmkit_tiny_gen\n{common}output_type: generate_until\ndoc_to_text: '{{{{question}}}}'\n"
        "doc_to_target: '{{answer}}'\ngeneration_kwargs:\n  until: ['\\n']\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    return root


def run(model: str, model_args: str, tasks_dir: Path) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import vlmkit.eval.lm_eval_model  # noqa: F401  (registers "vlmkit")

    out = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks_dir)), batch_size=1)
    samples = {task: [s["filtered_resps"] for s in out["samples"][task]] for task in TASKS}
    return {"results": out["results"], "samples": samples}


@pytest.fixture(scope="module")
def setup(zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-eval")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets-cache")
    hf = zoo("llama")
    gguf = convert(hf, root / "f32", dtype="f32", verify=False).model_path
    return {"hf": hf, "gguf": gguf, "tasks": write_tasks(root / "tasks")}


@pytest.fixture(scope="module")
def reference(setup):
    """lm-eval's own HF model, fp32 on the CPU."""
    return run("hf", f"pretrained={setup['hf']},dtype=float32,device=cpu", setup["tasks"])


def _loglikelihoods(result: dict, task: str) -> list[float]:
    return [float(r[0][0] if isinstance(r[0], (list, tuple)) else r[0]) for r in result["samples"][task]]


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
def test_same_numbers_as_lm_evals_hf_model(setup, reference, backend):
    model = setup["hf"] if backend == "transformers" else setup["gguf"]
    ours = run("vlmkit", f"model={model},backend={backend}", setup["tasks"])
    tol = 1e-4 if backend == "transformers" else 2e-3
    for task in ("vlmkit_tiny_mc", "vlmkit_tiny_ppl"):
        assert _loglikelihoods(ours, task) == pytest.approx(_loglikelihoods(reference, task), rel=tol, abs=tol)
    assert ours["results"]["vlmkit_tiny_mc"]["acc,none"] == reference["results"]["vlmkit_tiny_mc"]["acc,none"]
    assert ours["results"]["vlmkit_tiny_ppl"]["word_perplexity,none"] == pytest.approx(
        reference["results"]["vlmkit_tiny_ppl"]["word_perplexity,none"], rel=10 * tol)
    assert ours["samples"]["vlmkit_tiny_gen"] == reference["samples"]["vlmkit_tiny_gen"]


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
def test_vlmkit_eval_lm_eval_is_lm_evals_command_line(setup, reference, backend, tmp_path):
    """`vlmkit eval lm-eval ARGS` is `lm_eval ARGS` with --model vlmkit known: lm-eval's own parser, run and
    results file, the same accuracy as lm-eval's hf model."""
    model = setup["hf"] if backend == "transformers" else setup["gguf"]
    done = subprocess.run(
        [sys.executable, "-m", "vlmkit", "eval", "lm-eval", "--model", "vlmkit", "--model_args",
         f"model={model},backend={backend}", "--tasks", "vlmkit_tiny_mc", "--include_path", str(setup["tasks"]),
         "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vlmkit_tiny_mc" in done.stdout and "acc" in done.stdout
    (results,) = (tmp_path / "out").rglob("results_*.json")
    acc = json.loads(results.read_text())["results"]["vlmkit_tiny_mc"]["acc,none"]
    assert acc == reference["results"]["vlmkit_tiny_mc"]["acc,none"]


def test_vlmkit_eval_lm_eval_bad_model_is_one_line(setup):
    done = subprocess.run(
        [sys.executable, "-m", "vlmkit", "eval", "lm-eval", "--model", "vlmkit", "--model_args",
         "model=/nonexistent/model", "--tasks", "vlmkit_tiny_mc", "--include_path", str(setup["tasks"])],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == "error: /nonexistent/model: no such file or directory"
