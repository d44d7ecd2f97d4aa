"""Tokenizers for the replica zoo, trained in-process on the embedded corpus (no download).

Two kinds, like the real checkpoints the zoo imitates:

* byte-level BPE (calm2 / GPT-NeoX style), trained with the ``tokenizers`` library. Its merges come
  from our own corpus, so llama.cpp's converter has no pre-tokenizer hash for it — exactly the case
  the seed user hit with calm2.
* sentencepiece BPE with byte fallback (Llama / Gemma style), trained with ``sentencepiece`` and
  shipped as ``tokenizer.model`` next to the ``tokenizer.json`` transformers derives from it.

Training is single-threaded so two builds give byte-identical files.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from vlmkit.zoo.corpus import CORPUS

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }}\n"
    "{% else %}{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
"""calm2 / llava-calm2-siglip prompt format: ``USER: <image>\\n{prompt}\\nASSISTANT: ``."""

STRING_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ message['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
"""The same format from a template that reads ``content`` as a plain string (no ``{"type": "image"}``
parts), as many community LLaVA checkpoints ship: the ``<image>`` line must already be in the text."""

LLAVA15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{{ item['text'] }}{% endfor %}{% endif %}"
    "{{ eos_token }} "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""llava-1.5 prompt format: ``USER: <image>\\n{prompt} ASSISTANT:``."""

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}[INST] {{ message['content'] | trim }} [/INST]"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] | trim }} {{ eos_token }}"
    "{% else %}<<SYS>>\n{{ message['content'] | trim }}\n<</SYS>>\n\n{% endif %}"
    "{% endfor %}"
)
"""Llama-2-chat style ``[INST] ... [/INST]`` template."""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def train_byte_level_bpe(vocab_size: int, special_tokens: Sequence[str], texts: Iterable[str] | None = None):
    """A GPT-NeoX / calm2 style byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts`` (default: the
    corpus; a realistic 65k vocabulary needs megabytes of text, see bench/seed_scale.py).

    ``special_tokens`` get the first ids, in order (calm2: ``<|endoftext|>`` = 0, ``<|padding|>`` = 1).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS if texts is None else texts, trainer=trainer)
    return tokenizer


def byte_level_tokenizer(vocab_size: int, specials: dict[str, str], extra_special: Sequence[str] = (),
                         texts: Iterable[str] | None = None):
    """Wrap a trained byte-level BPE in transformers' ``GPTNeoXTokenizer`` (calm2's tokenizer class).

    ``specials`` maps transformers' roles (``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``)
    to token strings; ``extra_special`` are added after training (``<image>``), so they take the ids
    right after the learned vocabulary, as added tokens do in the real checkpoints.
    """
    from tokenizers import AddedToken
    from transformers import GPTNeoXTokenizer

    ordered = list(dict.fromkeys(specials.values()))
    tokenizer = GPTNeoXTokenizer(
        tokenizer_object=train_byte_level_bpe(vocab_size, ordered, texts), clean_up_tokenization_spaces=False,
        **specials,
    )
    if extra_special:
        added = [AddedToken(t, special=True, normalized=False) for t in extra_special]
        tokenizer.add_special_tokens({"additional_special_tokens": added})
    return tokenizer


Special = tuple[int, str]


def train_sentencepiece(
    vocab_size: int,
    *,
    unk: Special = (0, "<unk>"),
    bos: Special = (1, "<s>"),
    eos: Special = (2, "</s>"),
    pad: Special = (-1, "<pad>"),
) -> bytes:
    """A Llama-style sentencepiece BPE model (byte fallback, digits split, no normalization).

    Each special is ``(id, piece)``; Llama: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2; Gemma: ``<pad>`` 0,
    ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        add_dummy_prefix=True,
        hard_vocab_limit=False,
        num_threads=1,
        unk_id=unk[0],
        bos_id=bos[0],
        eos_id=eos[0],
        pad_id=pad[0],
        unk_piece=unk[1],
        bos_piece=bos[1],
        eos_piece=eos[1],
        pad_piece=pad[1],
        minloglevel=2,
    )
    return buffer.getvalue()


def sentencepiece_tokenizer(tokenizer_cls, model: bytes, workdir: Path, **kwargs):
    """Load a sentencepiece model through transformers' own converter (``tokenizer_cls.from_pretrained``).

    transformers 5 has no slow sentencepiece tokenizers; it converts ``tokenizer.model`` into a
    ``tokenizers`` BPE. ``workdir`` keeps the ``tokenizer.model`` that the caller ships too.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tokenizer.model").write_bytes(model)
    tokenizer = tokenizer_cls.from_pretrained(str(workdir), **kwargs)
    tokenizer.init_kwargs.pop("vocab_file", None)  # else the temp path leaks into tokenizer_config.json
    return tokenizer


def save_tokenizer(tokenizer, out: Path, sp_model: bytes | None = None) -> None:
    """``save_pretrained`` plus, for sentencepiece tokenizers, the ``tokenizer.model`` real repos ship."""
    tokenizer.save_pretrained(str(out))
    if sp_model is not None:
        (out / "tokenizer.model").write_bytes(sp_model)

