"""`--backend vllm` really running vLLM's CPU build (own venv: `.ci/vllm-env`, then `pytest -m vllm tests/vllm`).

Greedy tokens must equal transformers' at float32 (a precision both run on CPU): a text Llama on vLLM's own model
code, the demo SigLIP LLaVA with images on vLLM's Transformers modeling backend (the one vLLM runs VLMs on where
torchvision cannot load). Replicas have LM head size 64, which vLLM's CPU attention supports.

A VLM's vLLM engine runs in a child process: vLLM's Transformers backend patches transformers' model classes in the
process it runs in.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import vlmkit
from vlmkit.errors import UnsupportedError

pytestmark = pytest.mark.vllm

TEXT_PROMPTS = ["Hello", "The cat sat on", "日本語で答えてください。"]


def test_the_environment_is_the_cpu_build_with_torch_pinned():
    import torch
    import vllm  # noqa: F401  (a missing vLLM is a failure here, not a skip)

    assert torch.__version__.startswith("2.13.0")
    assert not torch.cuda.is_available()


@pytest.fixture(scope="module")
def llama(zoo):
    return zoo("llama")


@pytest.fixture(scope="module")
def llama_reference(llama):
    with vlmkit.load(llama, backend="transformers", dtype="f32") as hf:
        greedy = [hf.generate(p, max_new_tokens=16) for p in TEXT_PROMPTS]
        ids = hf.backend.tokenizer("The quick brown fox jumps over the lazy dog").input_ids
        logits = _transformers_logits(hf.backend, ids)
    return greedy, ids, logits


def _transformers_logits(backend, ids):
    import torch

    with torch.inference_mode():
        return backend.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


@pytest.fixture(scope="module")
def llama_vllm(llama, llama_reference):
    with vlmkit.load(llama, backend="vllm", dtype="f32") as runner:
        yield runner


def test_text_greedy_tokens_equal_transformers_f32(llama_vllm, llama_reference):
    greedy, _, _ = llama_reference
    streamed = [llama_vllm.generate(p, max_new_tokens=16) for p in TEXT_PROMPTS]
    batched = llama_vllm.generate_batch(TEXT_PROMPTS, max_new_tokens=16)
    for ref, one, many in zip(greedy, streamed, batched):
        assert (one.prompt_tokens, one.token_ids, one.text) == (ref.prompt_tokens, ref.token_ids, ref.text)
        assert (many.token_ids, many.text, many.finish_reason) == (ref.token_ids, ref.text, ref.finish_reason)
        assert one.backend == "vllm" and len(one.token_ids) == 16


def test_text_prompt_logits_equal_transformers(llama_vllm, llama_reference):
    _, ids, reference = llama_reference
    ours = llama_vllm.backend.logits(ids)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-3
    assert (ours.argmax(-1) == reference.argmax(-1)).all()


def test_stop_strings_and_vllm_sampling_limits(llama_vllm, llama_reference):
    greedy, _, _ = llama_reference
    ref = greedy[0]
    stop = ref.text[3:5]
    stopped = llama_vllm.generate(TEXT_PROMPTS[0], max_new_tokens=16, stop=[stop])
    assert stopped.finish_reason == "stop" and stopped.text == ref.text[:ref.text.find(stop)]
    with pytest.raises(UnsupportedError, match="temperature"):  # vLLM's own limit, as a one-line error
        llama_vllm.generate(TEXT_PROMPTS[1], max_new_tokens=4, temperature=5.0)


@pytest.fixture(scope="module")
def demo_questions():
    from vlmkit.demo.dataset import make_split

    return [(item.image, qa.question) for item in make_split("test", 4) for qa in item.questions]


VLLM_DEMO_BATCH = """
import json, sys
import vlmkit
from vlmkit.demo.dataset import make_split
questions = [(item.image, qa.question) for item in make_split("test", 4) for qa in item.questions]
with vlmkit.load("demo", backend="vllm", dtype="f32") as runner:
    batched = runner.generate_batch([q for _, q in questions], [[i] for i, _ in questions], max_new_tokens=8)
    streamed = runner.generate(questions[0][1], images=[questions[0][0]], max_new_tokens=8)
json.dump({"batched": [[r.token_ids, r.text] for r in batched],
           "streamed": [streamed.prompt_tokens, streamed.token_ids]}, sys.stdout)
"""


def test_demo_image_greedy_tokens_equal_transformers_f32(demo_questions):
    """vLLM runs in a child process: its Transformers modeling backend (used for VLMs here) patches transformers'
    model classes, which would break every later transformers model of this test process."""
    with vlmkit.load("demo", backend="transformers", dtype="f32") as hf:
        reference = [hf.generate(q, images=[image], max_new_tokens=8) for image, q in demo_questions]
    done = subprocess.run([sys.executable, "-c", VLLM_DEMO_BATCH], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    assert [ids for ids, _ in ours["batched"]] == [r.token_ids for r in reference]
    assert [text for _, text in ours["batched"]] == [r.text for r in reference]
    assert ours["streamed"] == [reference[0].prompt_tokens, reference[0].token_ids]
    assert sum(r.text.strip() != "" for r in reference) == len(reference)  # real answers, not empty strings


def test_refuses_a_layout_vllm_cannot_load_with_the_fix(tmp_path):
    """transformers 5 saves a LLaVA it built from a config as ``vision_tower.embeddings...`` (tests/test_export_hf.py
    shows that); here the same names are written with safetensors directly."""
    import shutil

    from safetensors.torch import load_file, save_file

    from vlmkit.hub import resolve_model

    demo, bad = resolve_model("demo"), tmp_path / "demo-tf5"
    shutil.copytree(demo, bad)
    tensors = load_file(str(demo / "model.safetensors"))
    save_file({k.replace("vision_tower.vision_model.", "vision_tower."): v for k, v in tensors.items()},
              str(bad / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UnsupportedError, match=r"vlmkit convert .* --to hf"):
        vlmkit.load(bad, backend="vllm")


def test_run_cli_demo_on_vllm_answers_like_transformers(tmp_path, demo_questions):
    """No --dtype: `auto` is the checkpoint's float32 on both (vLLM's own `auto` would be bfloat16)."""
    image, question = demo_questions[1]
    image.save(tmp_path / "scene.png")
    answers = []
    for backend in ("transformers", "vllm"):
        done = subprocess.run([sys.executable, "-m", "vlmkit", "run", "demo", "--backend", backend,
                               "--image", str(tmp_path / "scene.png"), "--prompt", question, "--json"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        answers.append(json.loads(done.stdout))  # stdout is exactly one JSON line: vLLM's prints are kept off it
    assert answers[1]["backend"] == "vllm"
    assert answers[1]["token_ids"] == answers[0]["token_ids"] and answers[1]["text"] == answers[0]["text"]
