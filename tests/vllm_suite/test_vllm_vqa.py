"""`vlmkit eval vqa demo --backend vllm` (MME rules, the README's table), batched, against transformers on the
whole test split: every answer and so every score the same (own venv, `-m vllm`). The demo's scores are not
pinned: the reference is measured in the same run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.vllm


def test_demo_vqa_scores_equal_on_vllm_and_transformers(tmp_path):
    from vlmkit.eval.vqa import evaluate, split_questions

    reference = evaluate(split_questions("test"), "demo", backend="transformers")
    # vLLM's Transformers backend (VLMs here) patches transformers where it runs: the command is its own process
    done = subprocess.run([sys.executable, "-m", "vlmkit", "eval", "vqa", "demo", "--backend", "vllm", "--out",
                           str(tmp_path / "vllm.jsonl"), "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout)
    assert ours["backend"] == "vllm" and len(ours["predictions"]) == len(reference["predictions"]) == 600
    assert [p["prediction"] for p in ours["predictions"]] == [p["prediction"] for p in reference["predictions"]]
    assert ours["categories"] == json.loads(json.dumps(reference["categories"]))
    assert (tmp_path / "vllm.jsonl").is_file()
