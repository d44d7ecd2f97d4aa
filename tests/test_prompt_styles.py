"""Image prompts for every chat-template style, on both backends (issue 14, deliverable 1).

typed content parts (llava-calm2-siglip), string content (``USER: {{ content }}``: llava-string-template,
the seed model's prompt format) and no template at all: the ``<image>`` line goes where LLaVA's
processor looks for it; ``vlmkit run`` answers alike on transformers and on the GGUF, and ``convert``
passes its default verification (greedy tokens with a photo included).
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import vlmkit
from vlmkit.cli import _register, app
from vlmkit.errors import VlmkitError

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp
_register()
QUESTION = "What is in the picture?"


def no_template(zoo, tmp_path):
    """llava-calm2-siglip with every trace of its chat template removed."""
    model = tmp_path / "no-template"
    shutil.copytree(zoo("llava-calm2-siglip"), model)
    (model / "chat_template.jinja").unlink()
    for path in model.glob("*.json"):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and config.pop("chat_template", None) is not None:
            path.write_text(json.dumps(config))
    return model


@pytest.fixture(scope="module", params=["typed", "string", "none"])
def style(request, zoo, tmp_path_factory):
    """(style, HF model dir, GGUF dir converted with the default verification, convert's result)."""
    from vlmkit.convert import convert

    tmp = tmp_path_factory.mktemp(request.param)
    model = {"typed": lambda: zoo("llava-calm2-siglip"), "string": lambda: zoo("llava-string-template"),
             "none": lambda: no_template(zoo, tmp)}[request.param]()
    result = convert(model, tmp / "gguf", dtype="f32")
    return request.param, model, tmp / "gguf", result


def photo():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea())


def test_convert_default_verification_passes_with_an_image(style):
    _, _, _, result = style
    greedy = result.verify.image_greedy
    assert result.mmproj_path is not None and "skipped" not in greedy
    assert greedy["first_diff"] is None and len(greedy["hf_tokens"]) == 16 and result.verify.ok


def test_image_prompt_text_per_style(style):
    kind, model, gguf_dir, _ = style
    with vlmkit.load(model, dtype="f32") as hf, vlmkit.load(gguf_dir) as gguf:
        ours, ref = gguf.generate(QUESTION, images=[photo()], max_new_tokens=4), \
            hf.generate(QUESTION, images=[photo()], max_new_tokens=4)
        typed = kind == "typed"
        from vlmkit.runtime.prompt import user_message

        turn = user_message(QUESTION, 1, typed, hf.backend.image_placeholder)
        text = hf.backend.render([turn], 1)
    expected = {"typed": "USER: <image>\n", "string": "USER: <image>\n", "none": "<image>\n"}[kind]
    assert text.startswith(expected + QUESTION) and text.count("<image>") == 1
    assert ours.prompt_tokens == ref.prompt_tokens and ours.token_ids == ref.token_ids


def test_run_cli_answers_alike_on_both_backends(style, tmp_path):
    _, model, gguf_dir, _ = style
    photo().save(tmp_path / "cat.png")
    answers = []
    for target in (model, gguf_dir):
        result = CliRunner().invoke(app, ["run", str(target), "--image", str(tmp_path / "cat.png"), "-p", QUESTION,
                                          "--max-new-tokens", "6", "--json"])
        assert result.exit_code == 0, result.output
        answers.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert answers[0]["backend"] == "transformers" and answers[1]["backend"] == "llamacpp"
    assert answers[0]["token_ids"] == answers[1]["token_ids"] and answers[0]["prompt_tokens"] == answers[1]["prompt_tokens"]


def test_chat_history_keeps_images_in_string_content(style):
    """A second turn (history with the image line) renders and answers alike on both backends."""
    _, model, gguf_dir, _ = style
    answers = []
    for target in (model, gguf_dir):
        with vlmkit.load(target, dtype="f32" if target == model else None) as runner:
            first = "".join(runner.chat(QUESTION, images=[photo()], max_new_tokens=4))
            second = "".join(runner.chat("And the colour?", max_new_tokens=4))
            answers.append((first, second, runner.last_result.prompt_tokens))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("name", ["llava-calm2-siglip", "llava-string-template"])
def test_image_text_in_the_prompt_is_one_line_error(name):
    with vlmkit.load(f"zoo:{name}", dtype="f32") as hf:
        with pytest.raises(VlmkitError, match="reads as an image: give pictures with --image"):
            hf.generate("<image> what is this?", images=[photo()], max_new_tokens=2)


def test_templates_render_in_jinja_sandbox(zoo):
    """A template that reaches for Python internals is refused by the sandbox, as one line, on both
    backends' renderers (transformers' ImmutableSandboxedEnvironment)."""
    from vlmkit.runtime.prompt import render_template

    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(VlmkitError, match="refused by the sandbox"):
        render_template(evil, [{"role": "user", "content": "hi"}], {})
    mutate = "{% set x = [] %}{{ x.append(1) }}"
    with pytest.raises(VlmkitError, match="refused by the sandbox"):
        render_template(mutate, [{"role": "user", "content": "hi"}], {})


@pytest.mark.parametrize("target", ["demo", "gguf"])
def test_chat_history_continues_the_prompt_exactly(target, tmp_path):
    """The demo's template ends the generation prompt with ``ASSISTANT:`` and renders a past answer as
    ``ASSISTANT: {content}``: the history keeps the answer without the model's leading space, so the
    next turn's prompt holds exactly the tokens the model produced (not ``ASSISTANT:  red``)."""
    from vlmkit.convert import convert

    model = "demo"
    if target == "gguf":
        convert("demo", tmp_path / "gguf", dtype="f32", verify=False)
        model = tmp_path / "gguf"
    with vlmkit.load(model) as runner:
        first = "".join(runner.chat("What color is the square?", images=[photo()]))
        prompt = runner.backend.render(runner.history[:1], 1)
        assert first.startswith(" ") and runner.backend.render(runner.history, 1).startswith(prompt + first)
        "".join(runner.chat("Is there a circle?"))
        second = runner.backend.prepare([*runner.history[:2], runner.history[2]], [photo()]).text
        assert f"ASSISTANT:{first}" in second and f"ASSISTANT: {first}" not in second
