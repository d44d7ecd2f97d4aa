"""A tokenizer's summary from its files, without importing the model's tokenizer code.

tokenizer.json is read by the ``tokenizers`` library (pure data, no code); sentencepiece-only
folders by ``sentencepiece``; GGUF files from their ``tokenizer.ggml.*`` metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class TokenizerSummary:
    kind: str                          # "BPE", "Unigram", "WordPiece", "sentencepiece", GGUF's tokenizer.ggml.model
    tokenizer_class: str | None
    vocab_size: int
    added_tokens: int
    special_tokens: dict[str, str] = field(default_factory=dict)
    chat_template: bool = False
    files: list[str] = field(default_factory=list)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # serialized AddedToken
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}


def summarize_tokenizer(folder: Path, gguf_metadata: dict[str, Any] | None = None) -> TokenizerSummary | None:
    if gguf_metadata is not None:
        return _from_gguf(gguf_metadata)
    config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    specials = {k: t for k in _SPECIAL_KEYS if (t := _token_text(config.get(k, special_map.get(k))))}
    has_template = bool(config.get("chat_template")) or any(
        (folder / name).is_file() for name in ("chat_template.jinja", "chat_template.json")
    )
    files = sorted(
        p.name for p in folder.glob("*")
        if p.name in {"tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json", "merges.txt", "tokenizer_config.json"}
    )
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        kind = json.loads(tokenizer.to_str())["model"]["type"]
        base = tokenizer.get_vocab_size(with_added_tokens=False)
        total = tokenizer.get_vocab_size(with_added_tokens=True)
        return TokenizerSummary(kind, config.get("tokenizer_class"), total, total - base, specials, has_template, files)
    if (folder / "tokenizer.model").is_file():
        import sentencepiece

        processor = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
        return TokenizerSummary(
            "sentencepiece", config.get("tokenizer_class"), processor.vocab_size(), 0, specials, has_template, files
        )
    if (folder / "vocab.txt").is_file():
        size = sum(1 for _ in (folder / "vocab.txt").open(encoding="utf-8"))
        return TokenizerSummary("WordPiece", config.get("tokenizer_class"), size, 0, specials, has_template, files)
    return None


def _from_gguf(meta: dict[str, Any]) -> TokenizerSummary | None:
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        return None
    tokens = meta.get("tokenizer.ggml.tokens") or []
    vocab = len(tokens) if isinstance(tokens, list) else int(tokens)
    specials = {}
    for key in ("bos", "eos", "unknown", "padding"):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            text = tokens[token_id] if isinstance(tokens, list) and token_id < len(tokens) else str(token_id)
            specials[f"{key}_token"] = text
    return TokenizerSummary(
        kind=str(model),
        tokenizer_class=meta.get("tokenizer.ggml.pre"),
        vocab_size=vocab,
        added_tokens=0,
        special_tokens=specials,
        chat_template=bool(meta.get("tokenizer.chat_template")),
        files=[],
    )
