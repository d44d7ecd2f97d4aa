"""`vlmkit.load(...).generate` on the transformers backend, checked against transformers' own generate()."""

from __future__ import annotations

import pytest
import torch

import vlmkit
from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.runtime.session import StopTextStream

PROMPT = "Tell me a story about a red square."
PROMPTS = [PROMPT, "赤い四角と青い丸の話をしてください。", "the the the the the"]


@pytest.fixture(scope="module")
def llama():
    return vlmkit.load("zoo:llama", dtype="f32", device="cpu")


@pytest.fixture(scope="module")
def opencalm():
    return vlmkit.load("zoo:opencalm", dtype="f32", device="cpu")


@pytest.fixture(scope="module")
def llava():
    return vlmkit.load("zoo:llava-clip", dtype="f32", device="cpu")


@pytest.fixture(scope="module")
def astronaut():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


def reference_ids(runner, messages, max_new_tokens, **generate_kwargs) -> tuple[int, list[int]]:
    """transformers' canonical path: apply_chat_template(tokenize=True) then model.generate()."""
    backend = runner.backend
    inputs = backend.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt")
    n = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        out = backend.model.generate(**inputs, max_new_tokens=max_new_tokens, **{"top_k": 0, **generate_kwargs})
    ids = out[0, n:].tolist()
    eos = backend.eos_ids()
    return n, ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]


def test_greedy_equals_generate_llama(llama):
    result = llama.generate(PROMPT, max_new_tokens=24)
    n, ids = reference_ids(llama, [{"role": "user", "content": PROMPT}], 24, do_sample=False)
    assert result.prompt_tokens == n
    assert result.token_ids == ids and len(ids) == 24
    assert result.text == llama.backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert result.finish_reason == "length"


def test_greedy_equals_generate_llava_with_image(llava, astronaut):
    result = llava.generate("What is in the picture?", images=[astronaut], max_new_tokens=16)
    messages = [{"role": "user", "content": [{"type": "image", "image": astronaut},
                                             {"type": "text", "text": "What is in the picture?"}]}]
    n, ids = reference_ids(llava, messages, 16, do_sample=False)
    assert result.prompt_tokens == n > 16  # the image expands into its patch tokens
    assert result.token_ids == ids


def test_paligemma_prompt_is_built_by_its_processor(astronaut):
    """PaliGemma takes a raw prompt; its processor writes image tokens + BOS + text + newline."""
    with vlmkit.load("zoo:paligemma", dtype="f32") as runner:
        result = runner.generate("caption en", images=[astronaut], max_new_tokens=8)
        backend = runner.backend
        inputs = backend.processor(text="caption en", images=astronaut, return_tensors="pt")
        with torch.inference_mode():
            out = backend.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        eos = backend.eos_ids()
    n = inputs["input_ids"].shape[1]
    ids = out[0, n:].tolist()
    assert result.prompt_tokens == n
    assert result.token_ids == ids[: next((i for i, t in enumerate(ids) if t in eos), len(ids))]


def penalty_case(runner) -> tuple[str, float]:
    """A prompt and penalty for which the penalty changes the greedy answer (so the test can fail)."""
    for prompt in PROMPTS:
        plain = runner.generate(prompt, max_new_tokens=24).token_ids
        for penalty in (1.3, 5.0):
            if runner.generate(prompt, max_new_tokens=24, repetition_penalty=penalty).token_ids != plain:
                return prompt, penalty
    raise AssertionError("the repetition penalty never changes this model's greedy answer")


def test_repetition_penalty_equals_generate(opencalm):
    prompt, penalty = penalty_case(opencalm)
    result = opencalm.generate(prompt, max_new_tokens=24, repetition_penalty=penalty)
    _, ids = reference_ids(opencalm, [{"role": "user", "content": prompt}], 24, do_sample=False,
                           repetition_penalty=penalty)
    assert result.token_ids == ids


def test_seeded_sampling_reproducible_and_equal_to_generate(opencalm):
    settings = dict(temperature=2.0, top_k=40, top_p=0.95, repetition_penalty=1.05)
    first = opencalm.generate(PROMPT, max_new_tokens=12, seed=3, **settings)
    assert opencalm.generate(PROMPT, max_new_tokens=12, seed=3, **settings).token_ids == first.token_ids
    draws = {tuple(opencalm.generate(PROMPT, max_new_tokens=12, seed=s, **settings).token_ids) for s in range(6)}
    assert len(draws) > 1  # it really samples
    torch.manual_seed(3)
    _, ids = reference_ids(opencalm, [{"role": "user", "content": PROMPT}], 12, do_sample=True, **settings)
    assert first.token_ids == ids


def test_stop_string_cuts_text_and_generation(llama):
    full = llama.generate(PROMPT, max_new_tokens=24)
    stop = full.text[6:9]
    assert stop and full.text.find(stop) == 6
    result = llama.generate(PROMPT, max_new_tokens=24, stop=[stop])
    assert result.text == full.text[:6]
    assert result.finish_reason == "stop"
    assert result.completion_tokens < full.completion_tokens
    assert result.token_ids == full.token_ids[: result.completion_tokens]


def test_stream_pieces_join_to_text(llama):
    pieces = list(llama.stream(PROMPT, max_new_tokens=16))
    assert len(pieces) > 1
    assert "".join(pieces) == llama.last_result.text == llama.generate(PROMPT, max_new_tokens=16).text


def test_result_fields(llama):
    result = llama.generate(PROMPT, max_new_tokens=8).to_dict()
    assert result["completion_tokens"] == 8 and result["prompt_tokens"] > 5
    assert result["tokens_per_s"] > 0 and 0 < result["time_to_first_token_s"] <= result["total_s"]
    assert result["peak_rss_mb"] > 50 and result["backend"] == "transformers"


def test_chat_keeps_history(llama):
    llama.reset()
    first = "".join(llama.chat("Hello!", max_new_tokens=6))
    n_first = llama.last_result.prompt_tokens
    "".join(llama.chat("And then?", max_new_tokens=6))
    assert llama.last_result.prompt_tokens > n_first + 6
    assert [m["role"] for m in llama.history] == ["user", "assistant", "user", "assistant"]
    assert llama.history[1]["content"] == first
    rendered = llama.backend.render(llama.history[:3])
    assert "Hello!" in rendered and "And then?" in rendered
    llama.reset()
    assert llama.history == []


def test_missing_image_names_the_file(llava, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(VlmkitError, match="nope.png: image not found"):
        llava.generate("hi", images=[missing])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(VlmkitError, match="broken.png: cannot read the image"):
        llava.generate("hi", images=[broken])


def test_prompt_longer_than_context(llama):
    with pytest.raises(VlmkitError, match="longer than the context of 4096 tokens"):
        llama.generate("red square " * 3000)


def test_text_model_rejects_images(llama, astronaut):
    with pytest.raises(UnsupportedError, match="text-only model"):
        llama.generate("hi", images=[astronaut])


@pytest.mark.parametrize("name, reason", [("vila", "transformers cannot run architecture LlavaLlamaModel"),
                                          ("minilm", "BertModel is not a text-generation model")])
def test_unsupported_architecture(name, reason):
    with pytest.raises(UnsupportedError, match=reason):
        vlmkit.load(f"zoo:{name}", backend="transformers")


def test_bad_sampling_options(llama):
    with pytest.raises(VlmkitError, match="unknown sampling option"):
        llama.generate("hi", temprature=0.5)
    with pytest.raises(VlmkitError, match="top_p"):
        llama.generate("hi", top_p=0)


def test_stop_stream_holds_back_partial_stop():
    pieces = {1: "ab", 2: "c<", 3: "/s", 4: ">zz"}
    stream = StopTextStream(lambda ids: "".join(pieces[i] for i in ids), ["</s>"])
    assert stream.push(1) == "ab"
    assert stream.push(2) == "c"       # "<" might start "</s>"
    assert stream.push(3) == ""
    assert stream.push(4) == "" and stream.stopped
    assert stream.text == "abc"
