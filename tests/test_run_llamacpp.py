"""The llama.cpp backend on GGUFs written by `vlmkit convert`, checked against the transformers backend."""

from __future__ import annotations

import pytest

import vlmkit
from vlmkit.errors import UnsupportedError, VlmkitError

import llama_cpp  # noqa: E402,F401  (a test dependency: missing fails the run, never skips it)
pytestmark = pytest.mark.llamacpp

PROMPTS = ["Tell me a story about a red square.", "赤い四角と青い丸の話をしてください。", "the the the the the"]


@pytest.fixture(scope="module")
def pair(request, tmp_path_factory):
    """(llama.cpp runner on an f32 GGUF, transformers runner on the same zoo model at f32)."""
    from vlmkit.convert import convert

    name = request.param
    out = tmp_path_factory.mktemp(name) / "gguf"
    convert(f"zoo:{name}", out, dtype="f32", verify=False)
    gguf = vlmkit.load(out, device="cpu", threads=2)
    hf = vlmkit.load(f"zoo:{name}", dtype="f32", device="cpu")
    assert gguf.name == "llamacpp" and hf.name == "transformers"
    yield gguf, hf
    gguf.close()


@pytest.mark.parametrize("pair", ["llama", "opencalm"], indirect=True)
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_greedy_tokens_equal_transformers_f32(pair, prompt):
    gguf, hf = pair
    ours, ref = gguf.generate(prompt, max_new_tokens=24), hf.generate(prompt, max_new_tokens=24)
    assert ours.prompt_tokens == ref.prompt_tokens
    assert ours.token_ids == ref.token_ids and len(ref.token_ids) == 24


@pytest.mark.parametrize("pair", ["llama"], indirect=True)
def test_prompt_text_and_tokens_equal(pair):
    from vlmkit.runtime.prompt import user_message

    gguf, hf = pair
    messages = [user_message(PROMPTS[1], 0, False)]
    ours, ref = gguf.backend.prepare(messages, []), hf.backend.prepare(messages, [])
    assert ours.text == ref.text and ours.text.startswith("<s>[INST]")
    assert ours.payload == ref.payload["input_ids"][0].tolist()
    for text in ("Hello world", "<s>Hello", "こんにちは </s> again"):
        for special in (True, False):
            ref_ids = hf.backend.tokenizer(text, add_special_tokens=special)["input_ids"]
            assert gguf.backend.tokenize(text, special) == ref_ids, (text, special)


@pytest.mark.parametrize("pair", ["opencalm"], indirect=True)
def test_repetition_penalty_matches_transformers(pair):
    gguf, hf = pair
    prompt, penalty = next(((p, x) for p in PROMPTS for x in (1.3, 5.0)
                            if hf.generate(p, max_new_tokens=24, repetition_penalty=x).token_ids
                            != hf.generate(p, max_new_tokens=24).token_ids), (None, None))
    assert prompt is not None, "the penalty never changes this model's greedy answer"
    ours = gguf.generate(prompt, max_new_tokens=24, repetition_penalty=penalty)
    assert ours.token_ids == hf.generate(prompt, max_new_tokens=24, repetition_penalty=penalty).token_ids
    assert ours.token_ids != gguf.generate(prompt, max_new_tokens=24).token_ids


@pytest.mark.parametrize("pair", ["opencalm"], indirect=True)
def test_seeded_sampling_reproducible(pair):
    gguf, _ = pair
    settings = dict(temperature=2.0, top_k=40, top_p=0.95, repetition_penalty=1.05, max_new_tokens=12)
    first = gguf.generate(PROMPTS[0], seed=5, **settings)
    assert gguf.generate(PROMPTS[0], seed=5, **settings).token_ids == first.token_ids
    draws = {tuple(gguf.generate(PROMPTS[0], seed=s, **settings).token_ids) for s in range(6)}
    assert len(draws) > 1


@pytest.mark.parametrize("pair", ["llama"], indirect=True)
def test_stop_and_stream(pair):
    gguf, hf = pair
    full = gguf.generate(PROMPTS[0], max_new_tokens=24)
    stop = full.text[6:9]
    result = gguf.generate(PROMPTS[0], max_new_tokens=24, stop=[stop])
    assert result.text == full.text[:full.text.find(stop)] and result.finish_reason == "stop"
    assert "".join(gguf.stream(PROMPTS[0], max_new_tokens=24)) == full.text
    assert gguf.last_result.tokens_per_s > 0 and gguf.last_result.backend == "llamacpp"


@pytest.mark.parametrize("pair", ["llama"], indirect=True)
def test_errors(pair, tmp_path):
    from PIL import Image

    gguf, _ = pair
    with pytest.raises(VlmkitError, match="longer than the context"):
        gguf.generate("red square " * 3000)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(UnsupportedError, match="images need the model's mmproj.gguf"):
        gguf.generate("hi", images=[image])
    with pytest.raises(VlmkitError, match="missing.png: image not found"):
        gguf.generate("hi", images=[tmp_path / "missing.png"])


def test_unknown_architecture_gguf(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "model.gguf"
    writer = GGUFWriter(path, arch="notamodel")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with pytest.raises(UnsupportedError, match="llama.cpp cannot load this GGUF \\(architecture notamodel\\)"):
        vlmkit.load(path)
    with pytest.raises(UnsupportedError, match="--dtype applies to the transformers backend"):
        vlmkit.load(path, dtype="f16")


def test_llava_gguf_with_image_runs_through_mtmd(tmp_path):
    """The mtmd path: the image lands where the template puts <image>, with as many positions as
    transformers' expanded image tokens, and the greedy answer equals transformers' (which also
    needs the mmproj to be exact; its embedding parity is `vlmkit convert --verify`'s job)."""
    from PIL import Image
    from skimage import data

    from vlmkit.convert import convert

    result = convert("zoo:llava-clip", tmp_path / "gguf", dtype="f32", verify=False)
    assert result.mmproj_path is not None
    image = Image.fromarray(data.astronaut())
    with vlmkit.load(tmp_path / "gguf") as gguf, vlmkit.load("zoo:llava-clip", dtype="f32") as hf:
        ours = gguf.generate("What is in the picture?", images=[image], max_new_tokens=8)
        ref = hf.generate("What is in the picture?", images=[image], max_new_tokens=8)
        assert ours.prompt_tokens == ref.prompt_tokens > gguf.generate("hi", max_new_tokens=1).prompt_tokens + 8
        assert ours.token_ids == ref.token_ids and ours.completion_tokens == 8


def test_siglip_default_strategy_feeds_transformers_image_rows(tmp_path):
    """llava-calm2-siglip: SigLIP has no CLS, yet "default" feature select drops patch 0, so transformers
    has 15 image tokens where mtmd makes 16. The backend feeds transformers' rows (the mmproj's row map):
    same prompt length and greedy tokens as transformers."""
    from PIL import Image
    from skimage import data

    from vlmkit.convert import convert

    result = convert("zoo:llava-calm2-siglip", tmp_path / "gguf", dtype="f32", verify=False)
    assert result.mmproj_path is not None
    with vlmkit.load(tmp_path / "gguf", device="cpu", threads=2) as gguf, \
            vlmkit.load("zoo:llava-calm2-siglip", dtype="f32", device="cpu") as hf:
        size = hf.backend.model.config.vision_config.image_size
        image = Image.fromarray(data.astronaut()).resize((size, size), Image.BICUBIC)
        ours = gguf.generate("What is in the picture?", images=[image], max_new_tokens=16)
        ref = hf.generate("What is in the picture?", images=[image], max_new_tokens=16)
        assert ours.prompt_tokens == ref.prompt_tokens  # mtmd's own count is one more
        assert ours.token_ids == ref.token_ids and ours.completion_tokens == 16
