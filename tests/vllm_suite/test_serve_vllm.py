"""`vlmkit serve` on vLLM, the end of the deploy path: the demo VLM quantized by `vlmkit quantize` (GPTQ W4A16,
conftest.py) served by vLLM's OpenAI-compatible server answers an image request from the `openai` client over
loopback as transformers answers it from the same files at the same precision, then stops (own venv, `-m vllm`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serve_client import free_port, serve_and_ask
from vlmkit.serve import plan_server

pytestmark = pytest.mark.vllm


def test_serve_quantized_demo_answers_an_image_request_like_transformers(w4a16_demo, tmp_path):
    from vlmkit.demo.dataset import make_split

    item = make_split("test", 1)[0]
    question = item.questions[1].question
    item.image.save(tmp_path / "scene.png")
    reference = subprocess.run([sys.executable, "-m", "vlmkit", "run", str(w4a16_demo), "--dtype", "bf16", "--image",
                                str(tmp_path / "scene.png"), "--prompt", question, "--max-new-tokens", "8", "--json"],
                               capture_output=True, text=True, timeout=300, check=True)
    expected = json.loads(reference.stdout)
    plan = plan_server(w4a16_demo, engine="vllm", port=free_port())
    assert plan.host == "127.0.0.1" and "--chat-template" in plan.argv and "--limit-mm-per-prompt" in plan.argv
    assert plan.argv[plan.argv.index("--dtype") + 1] == "bfloat16"  # vLLM's CPU W4A16 kernel has no float32
    answer = serve_and_ask(plan, question, item.image, tmp_path / "server.log", ready_timeout_s=600)
    assert answer.choices[0].message.content == expected["text"] and expected["text"].strip()
    assert answer.usage.prompt_tokens == expected["prompt_tokens"]
    assert answer.usage.completion_tokens == expected["completion_tokens"] + (expected["finish_reason"] == "eos")
