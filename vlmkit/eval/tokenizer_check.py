"""Do two backends' tokenizers give the same ids? With the one known, explainable sentencepiece difference.

Each side tokenizes with its default special tokens (``Backend.tokenize(text, True)``), i.e. what
``vlmkit run`` feeds its model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TokenizerCheck:
    n_texts: int
    n_same: int
    mismatches: list[dict[str, Any]] = field(default_factory=list)   # text, hf, gguf, explained (reason)

    @property
    def agreement(self) -> float:
        return self.n_same / self.n_texts if self.n_texts else 1.0

    @property
    def unexplained(self) -> int:
        return sum(1 for m in self.mismatches if not m.get("explained"))

    def as_dict(self) -> dict[str, Any]:
        return {"n_texts": self.n_texts, "n_same": self.n_same, "mismatches": self.mismatches,
                "agreement": self.agreement, "unexplained": self.unexplained}


def check_tokenizer(ref: Any, cand: Any, corpus: Sequence[str],
                    explain: Callable[[str, list[int]], str | None] | None = None) -> TokenizerCheck:
    """``explain(text, cand_ids)`` may name a known cause for a difference (None: unexplained)."""
    check = TokenizerCheck(len(corpus), 0)
    for text in corpus:
        ours, theirs = ref.tokenize(text, True), cand.tokenize(text, True)
        if ours == theirs:
            check.n_same += 1
        else:
            reason = explain(text, theirs) if explain else None
            check.mismatches.append({"text": text, "hf": ours, "gguf": theirs, "explained": reason})
    return check


class SentencePieceReference:
    """Explains the one known SPM difference: transformers 5 converts ``tokenizer.model`` into a
    ``Metaspace(prepend_scheme="first")`` pre-tokenizer, which adds the "▁" dummy prefix only at the very
    start of the text and not when the text already starts with a space; sentencepiece itself (and
    llama.cpp, which follows it) adds it to every text segment. A difference is explained when the
    sentencepiece library, run on the same segments (split at special tokens), gives llama.cpp's ids."""

    REASON = ("transformers' Metaspace(prepend_scheme='first') differs from sentencepiece here; "
              "sentencepiece itself gives llama.cpp's tokens")

    def __init__(self, model_file: Path, hf_tokenizer: Any):
        from sentencepiece import SentencePieceProcessor

        self.sp = SentencePieceProcessor(model_file=str(model_file))
        self.hf = hf_tokenizer

    @classmethod
    def for_dir(cls, tok_dir: Path, hf_tokenizer: Any) -> SentencePieceReference | None:
        tok_json = tok_dir / "tokenizer.json"
        if not (tok_dir / "tokenizer.model").exists():
            return None
        # without tokenizer.json, transformers 5 builds the same Metaspace pre-tokenizer from tokenizer.model
        if tok_json.exists() and '"prepend_scheme": "first"' not in json.dumps(
                json.loads(tok_json.read_text()).get("pre_tokenizer")):
            return None
        return cls(tok_dir / "tokenizer.model", hf_tokenizer)

    def __call__(self, text: str, ids: list[int]) -> str | None:
        hf = self.hf
        specials = sorted(hf.all_special_tokens, key=len, reverse=True)
        pieces = re.split("(" + "|".join(map(re.escape, specials)) + ")", text) if specials else [text]
        out = [hf.bos_token_id] if ids[:1] == [hf.bos_token_id] and hf.bos_token_id is not None else []
        for piece in pieces:
            if piece in specials:
                out.append(hf.convert_tokens_to_ids(piece))
            elif piece:
                out.extend(self.sp.encode(piece))
        return self.REASON if out == ids else None
