"""The demo's VQA evaluation (MME rules, the README's table) through vLLM, batched, against transformers on the
whole test split: every answer and so every score the same (own venv, `-m vllm`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm

# vLLM's Transformers backend (VLMs here) patches transformers in its process: it answers in a child process
VLLM_SCORES = """
import json, sys
from vlmkit.eval.vqa import evaluate, split_questions
result = evaluate(split_questions("test"), "demo", backend="vllm")
json.dump({"predictions": [p["prediction"] for p in result["predictions"]], "categories": result["categories"]},
          sys.stdout)
"""


def test_demo_vqa_scores_equal_on_vllm_and_transformers():
    from vlmkit.eval.vqa import evaluate, split_questions

    reference = evaluate(split_questions("test"), "demo", backend="transformers")
    done = subprocess.run([sys.executable, "-c", VLLM_SCORES], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(ours["predictions"]) == len(reference["predictions"]) == 600
    assert ours["predictions"] == [p["prediction"] for p in reference["predictions"]]
    assert ours["categories"] == json.loads(json.dumps(reference["categories"]))
