"""The lmms-eval model ``vlmkit`` (`lmms-eval --model vlmkit`, found through vlmkit's entry point) on a tiny
local image task: demo questions written here as jsonl + PNG files, no download. Runs in lmms-eval's own venv
(`.ci/lmms-env`, `-m lmms`): lmms-eval's dependencies would replace the main environment's torch.

References: generation answers equal transformers' own ``generate`` (``vlmkit.eval.vqa.answer``, batched, the
checkpoint's processor); log-likelihoods equal a forward pass of transformers' model on its processor's inputs,
on the transformers backend and (f32 GGUF) on llama.cpp. lmms-eval 0.7.3's evaluator cannot run a
loglikelihood / multiple_choice task with any model (``unwrap_generation_output`` turns each (logprob,
is_greedy) pair into its ``str``, then ``process_results`` fails: "ValueError: too many values to unpack"), so
``loglikelihood`` is called here on lmms-eval's own ``Instance`` requests of the loaded task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.lmms, pytest.mark.llamacpp]
N_QUESTIONS = 6
CHOICES = ["Yes", "No"]
UTILS = "from vlmkit.runtime.prompt import load_image\n\ndef doc_to_visual(doc):\n    return [load_image(doc['image'])]\n"


def write_tasks(root: Path, questions: list) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, q in enumerate(questions):
        q.image.save(root / f"{i}.png")
        rows.append({"image": str(root / f"{i}.png"), "question": q.question, "answer": q.answer,
                     "label": CHOICES.index(q.answer) if q.answer in CHOICES else 0})
    (root / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "utils.py").write_text(UTILS, encoding="utf-8")
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {root / 'tiny.jsonl'}\n"
              "test_split: test\ndoc_to_visual: !function utils.doc_to_visual\ndoc_to_text: '{{question}}'\n")
    (root / "gen.yaml").write_text(
        f"task: vlmkit_tiny_vqa\n{common}output_type: generate_until\ndoc_to_target: '{{{{answer}}}}'\n"
        "generation_kwargs:\n  max_new_tokens: 8\n  temperature: 0\nmetric_list:\n  - metric: exact_match\n")
    (root / "mc.yaml").write_text(
        f"task: vlmkit_tiny_vqa_mc\n{common}output_type: multiple_choice\ndoc_to_target: '{{{{label}}}}'\n"
        f"doc_to_choice: {json.dumps(CHOICES)}\nmetric_list:\n  - metric: acc\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vlmkit.convert import convert
    from vlmkit.eval.vqa import load_questions

    root = tmp_path_factory.mktemp("lmms-eval")
    questions = load_questions("demo", N_QUESTIONS)
    gguf = convert("demo", root / "f32", dtype="f32", verify=False).model_path
    return {"questions": questions, "gguf": gguf, "tasks": write_tasks(root / "tasks", questions)}


def lmms_eval(model_args: str, tasks_dir: Path, out: Path) -> list[str]:
    """`lmms-eval --model vlmkit ...` in a child process (the command line users type); its answers."""
    env = {**os.environ, "PYTHONPATH": str(Path.cwd()), "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(out / "datasets-cache")}
    done = subprocess.run(
        [sys.executable, "-m", "lmms_eval", "--model", "vlmkit", "--model_args", model_args, "--tasks",
         "vlmkit_tiny_vqa", "--include_path", str(tasks_dir), "--batch_size", "1",
         "--log_samples", "--output_path", str(out)], capture_output=True, text=True, timeout=900, env=env)
    samples = list(out.rglob("*samples_vlmkit_tiny_vqa*.jsonl"))  # lmms-eval exits 0 after an error: check output
    assert done.returncode == 0 and len(samples) == 1, (done.stdout + done.stderr)[-4000:]
    rows = sorted((json.loads(line) for line in samples[0].read_text().splitlines()), key=lambda r: r["doc_id"])
    return [_first(r["resps"]) for r in rows]


def _first(response):
    """lmms-eval logs a document's response as the text itself or nested in lists, depending on the task."""
    while isinstance(response, list):
        response = response[0]
    return response


def loglikelihoods(model_args: str, tasks_dir: Path) -> list[list[float]]:
    """``VlmkitLMMS.loglikelihood`` on the requests lmms-eval builds for the multiple-choice task."""
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict(["vlmkit_tiny_vqa_mc"], TaskManager(include_path=str(tasks_dir)))["vlmkit_tiny_vqa_mc"]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    model = get_model("vlmkit").create_from_arg_string(model_args)
    model.task_dict = {task.config.task: task.dataset}
    results = model.loglikelihood(task.instances)
    by_doc: dict[int, list[float]] = {}
    for instance, (logprob, _greedy) in sorted(zip(task.instances, results), key=lambda x: (x[0].doc_id, x[0].idx)):
        by_doc.setdefault(instance.doc_id, []).append(logprob)
    return [by_doc[i] for i in sorted(by_doc)]


def reference_loglikelihoods(questions: list) -> list[list[float]]:
    """log p(" Yes") and log p(" No") after each image + question: transformers' processor and model."""
    from hf_reference import answer_token_logprobs

    from vlmkit.hub import resolve_model

    items = [(q.image, q.question, " " + choice) for q in questions for choice in CHOICES]
    sums = [float(x.sum()) for x in answer_token_logprobs(resolve_model("demo"), items)]
    return [sums[i:i + len(CHOICES)] for i in range(0, len(sums), len(CHOICES))]


@pytest.fixture(scope="module")
def reference(setup):
    from vlmkit.eval.vqa import answer, load

    questions = setup["questions"]
    net, processor = load("demo")
    answers = answer(net, processor, [q.image for q in questions], [q.question for q in questions], max_new_tokens=8)
    return {"answers": answers, "loglikelihoods": reference_loglikelihoods(questions)}


def test_vlmkit_is_an_lmms_eval_model_through_the_entry_point():
    from lmms_eval.models import get_model

    from vlmkit.eval.lmms_eval_model import VlmkitLMMS

    assert get_model("vlmkit") is VlmkitLMMS


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
def test_lmms_eval_command_line_answers_as_transformers(setup, reference, backend, tmp_path):
    model = "demo" if backend == "transformers" else setup["gguf"]
    answers = lmms_eval(f"model={model},backend={backend}", setup["tasks"], tmp_path / "out")
    assert [a.strip() for a in answers] == reference["answers"]


@pytest.mark.parametrize("backend", ["transformers", "llamacpp"])
def test_loglikelihood_of_lmms_eval_requests(setup, reference, backend):
    model = "demo" if backend == "transformers" else setup["gguf"]
    ours = loglikelihoods(f"model={model},backend={backend}", setup["tasks"])
    tol = 1e-3 if backend == "transformers" else 2e-2
    np.testing.assert_allclose(ours, reference["loglikelihoods"], rtol=tol, atol=tol)
