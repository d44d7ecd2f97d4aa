"""`vlmkit serve` on vLLM: a W4A16 (compressed-tensors) demo VLM served by vLLM's OpenAI-compatible server answers an
image request from the `openai` client over loopback as transformers answers it from the same files, then stops
(own venv, `-m vllm`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from serve_client import free_port, serve_and_ask
from vlmkit.serve import plan_server
from w4a16 import build_w4a16

pytestmark = pytest.mark.vllm

# the language model is quantized; the SigLIP tower and the projector stay bf16 (as quantization recipes do)
KEEP = ("lm_head", "re:.*vision_tower.*", "re:.*multi_modal_projector.*")


def test_serve_quantized_demo_answers_an_image_request_like_transformers(tmp_path):
    from vlmkit.demo.dataset import make_split
    from vlmkit.hub import resolve_model

    quantized = build_w4a16("LlavaForConditionalGeneration", resolve_model("demo"), tmp_path / "demo-w4a16", KEEP)
    item = make_split("test", 1)[0]
    question = item.questions[1].question
    item.image.save(tmp_path / "scene.png")
    reference = subprocess.run([sys.executable, "-m", "vlmkit", "run", str(quantized), "--image",
                                str(tmp_path / "scene.png"), "--prompt", question, "--max-new-tokens", "8", "--json"],
                               capture_output=True, text=True, timeout=300, check=True)
    expected = json.loads(reference.stdout)
    plan = plan_server(quantized, engine="vllm", port=free_port())
    assert plan.host == "127.0.0.1" and "--chat-template" in plan.argv and "--limit-mm-per-prompt" in plan.argv
    assert plan.argv[plan.argv.index("--dtype") + 1] == "bfloat16"  # vLLM's CPU W4A16 kernel has no float32
    answer = serve_and_ask(plan, question, item.image, tmp_path / "server.log", ready_timeout_s=400)
    assert answer.choices[0].message.content == expected["text"] and expected["text"].strip()
    assert answer.usage.prompt_tokens == expected["prompt_tokens"]
    assert answer.usage.completion_tokens == expected["completion_tokens"] + (expected["finish_reason"] == "eos")
