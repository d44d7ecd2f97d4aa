"""`vlmkit serve` on llama.cpp (llama-cpp-python's server, mtmd for images): the demo's f32 GGUF answers an image
request from the `openai` client over loopback as vlmkit's llama.cpp backend does, then stops."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vlmkit
from serve_client import free_port, serve_and_ask
from vlmkit.errors import VlmkitError
from vlmkit.serve import plan_server


@pytest.mark.llamacpp
def test_serve_gguf_answers_an_image_request_like_the_llamacpp_backend(tmp_path):
    from vlmkit.convert import convert
    from vlmkit.demo.dataset import make_split

    convert("demo", tmp_path / "gguf", dtype="f32", verify=False)
    item = make_split("test", 1)[0]
    question = item.questions[1].question
    with vlmkit.load(tmp_path / "gguf") as runner:
        expected = runner.generate(question, images=[item.image], max_new_tokens=8)
    plan = plan_server(tmp_path / "gguf", port=free_port())
    assert plan.engine == "llamacpp" and "--clip_model_path" in plan.argv
    answer = serve_and_ask(plan, question, item.image, tmp_path / "server.log", ready_timeout_s=120)
    assert answer.choices[0].message.content == expected.text, (tmp_path / "server.log").read_text()[-2000:]


def test_serve_dry_run_json_and_refusals(tmp_path, zoo):
    done = subprocess.run([sys.executable, "-m", "vlmkit", "serve", str(zoo("llama")), "--engine", "llamacpp",
                           "--dry-run", "--json"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "needs a GGUF" in done.stderr
    with pytest.raises(VlmkitError, match="no checkpoint found"):  # the readers' verdict comes first
        plan_server(tmp_path, engine="vllm")
    with pytest.raises(VlmkitError, match="unknown engine"):
        plan_server(zoo("llama"), engine="tgi")
