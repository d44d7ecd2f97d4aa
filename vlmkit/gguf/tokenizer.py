"""Write the tokenizer into the GGUF: vocabulary, scores/merges, token types, special tokens, chat template.

Follows llama.cpp's converter (``_set_vocab_sentencepiece``, ``_set_vocab_gpt2``) and reuses gguf-py's
``SpecialVocab`` (merges, BOS/EOS/PAD/UNK ids, add_bos/add_eos, chat template). The one hand-written
part is ``match_pre_tokenizer``: llama.cpp names a byte-level BPE pre-tokenizer by hashing the token ids
of a probe string, which fails for any newly trained vocabulary (calm2's, the zoo's); instead the
``pre_tokenizer`` declared in tokenizer.json (its split regex and ByteLevel settings) is matched to the
llama.cpp pre-tokenizer type that runs the same regex. ``vlmkit.eval.verify`` proves each match by
tokenizing an English + Japanese corpus with both libraries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from vlmkit.errors import UnsupportedError

TT = gguf.TokenType
from vlmkit.gguf_keys import KEY_PREPEND_SCHEME  # noqa: E402  (written here)
"""``"first"`` when tokenizer.json's Metaspace has ``prepend_scheme: "first"`` (transformers 5's converted
sentencepiece tokenizers): "▁" only at the start of the whole text. llama.cpp's ``add_space_prefix`` adds
it after every special token too and has no key for "first"; vlmkit's run backend reads this one."""

# The split regexes of tokenizer.json (as HF writes them) -> the llama.cpp type running the same one.
GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
            r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEXES = {GPT2_RE: "gpt-2", LLAMA3_RE: "llama-bpe", QWEN2_RE: "qwen2"}


@dataclass
class VocabInfo:
    model: str          # tokenizer.ggml.model: "llama" (sentencepiece) or "gpt2" (byte-level BPE)
    pre: str | None     # tokenizer.ggml.pre
    n_tokens: int
    how: str            # one line for the report


def tokenizer_dir(model_dir: Path) -> Path:
    """Where the tokenizer files are: the model directory, else the family's ``text_subdir`` (VILA-1.5's
    ``llm/``)."""
    from vlmkit.families import family_for, text_dir
    from vlmkit.readers.model_files import read_config

    family, _ = family_for(read_config(model_dir) or {})
    for d in dict.fromkeys((model_dir, text_dir(model_dir, family))):
        if (d / "tokenizer.json").exists() or (d / "tokenizer.model").exists():
            return d
    raise UnsupportedError(model_dir, "no tokenizer.json or tokenizer.model found")


def add_vocab(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> VocabInfo:
    tok_dir = tokenizer_dir(model_dir)
    tok_json = _read_json(tok_dir / "tokenizer.json")
    model_type = (tok_json or {}).get("model", {}).get("type")
    if (tok_dir / "tokenizer.model").exists():
        proto = _spm_proto(tok_dir / "tokenizer.model")
        _refuse_unigram(tok_dir / "tokenizer.model", proto)
        info = _add_sentencepiece(writer, tok_dir, vocab_size)
        info.how += _spm_normalizer_note(proto)
    elif model_type == "BPE" and _is_byte_level(tok_json):
        info = _add_byte_level_bpe(writer, tok_dir, tok_json, vocab_size)
    elif model_type == "BPE" and tok_json["model"].get("byte_fallback"):
        info = _add_llama_hf(writer, tok_dir)
    else:
        raise UnsupportedError(tok_dir, f"tokenizer type {model_type} "
                                        "has no GGUF export yet (supported: sentencepiece BPE tokenizer.model, "
                                        "byte-level BPE tokenizer.json)")
    special = gguf.SpecialVocab(tok_dir, load_merges=info.model == "gpt2", n_vocab=info.n_tokens)
    special.add_special_token.update(added_specials(tok_dir))
    special.add_to_gguf(writer, quiet=True)
    if prepend_scheme(tok_json) == "first":
        writer.add_string(KEY_PREPEND_SCHEME, "first")
        info.how += '; Metaspace prepend_scheme "first"'
    return info


def prepend_scheme(tok_json: dict[str, Any] | None) -> str | None:
    """The ``prepend_scheme`` of a Metaspace step in tokenizer.json's pre-tokenizer or normalizer."""
    for part in ("pre_tokenizer", "normalizer"):
        for step in _steps((tok_json or {}).get(part)):
            if step.get("type") == "Metaspace":
                return step.get("prepend_scheme", "always")
    return None


def added_specials(tok_dir: Path) -> dict[str, bool]:
    """Whether the HF tokenizer adds BOS / EOS. llama.cpp's defaults differ from transformers' (its
    sentencepiece path adds BOS unless told otherwise), so the answer is always written: from
    tokenizer_config.json's ``add_bos_token`` / ``add_eos_token`` when set, else observed on
    tokenizer.json's post-processor, else on transformers' tokenizer. Verified by the tokenizer check."""
    config = _read_json(tok_dir / "tokenizer_config.json") or {}
    explicit = {k: bool(config[f"add_{k}_token"]) for k in ("bos", "eos") if f"add_{k}_token" in config}
    if len(explicit) == 2:
        return explicit
    if (tok_dir / "tokenizer.json").exists():
        return {**_observe_tokenizers(tok_dir, config), **explicit}
    return {**_observe_transformers(tok_dir), **explicit}


def _observe_tokenizers(tok_dir: Path, config: dict[str, Any]) -> dict[str, bool]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    with_special, plain = tok.encode("a").ids, tok.encode("a", add_special_tokens=False).ids
    added = {}
    for kind, token in (("bos", config.get("bos_token")), ("eos", config.get("eos_token"))):
        content = token.get("content") if isinstance(token, dict) else token
        tid = tok.token_to_id(content) if content else None
        if tid is not None:
            edge = with_special[:1] if kind == "bos" else with_special[-1:]
            plain_edge = plain[:1] if kind == "bos" else plain[-1:]
            added[kind] = edge == [tid] and plain_edge != [tid]
    return added


def _observe_transformers(tok_dir: Path) -> dict[str, bool]:
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(tok_dir)
    with_special, plain = tok("a").input_ids, tok("a", add_special_tokens=False).input_ids
    added = {}
    if tok.bos_token_id is not None:
        added["bos"] = with_special[:1] == [tok.bos_token_id] and plain[:1] != [tok.bos_token_id]
    if tok.eos_token_id is not None:
        added["eos"] = with_special[-1:] == [tok.eos_token_id] and plain[-1:] != [tok.eos_token_id]
    return added


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _spm_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def _refuse_unigram(path: Path, proto) -> None:
    """sentencepiece BPE models map to llama.cpp's "llama" tokenizer (merges by score). Unigram models
    would go to its "t5" (UGM) tokenizer, but on a unigram replica of the zoo's Llama that tokenizer
    disagreed with transformers on 16 of 23 corpus texts (byte fallback or not), so it is refused
    rather than written with tokens that silently differ."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    if proto.trainer_spec.model_type == pb.TrainerSpec.UNIGRAM:
        raise UnsupportedError(path, "unigram sentencepiece: llama.cpp's UGM tokenizer does not reproduce "
                                     "transformers' tokens (checked on vlmkit's EN+JA corpus); not converted")


def _spm_normalizer_note(proto) -> str:
    """llama.cpp's BPE sentencepiece tokenizer applies no normalization rule: say so when there is one."""
    spec = proto.normalizer_spec
    rule = spec.name if spec.name not in ("identity", "") and spec.precompiled_charsmap else None
    parts = ([f"normalization rule {rule}"] if rule else []) + \
        (["remove_extra_whitespaces"] if spec.remove_extra_whitespaces else [])
    return f"; note: sentencepiece {' and '.join(parts)} not applied by llama.cpp" if parts else ""


def _is_byte_level(tok_json: dict[str, Any]) -> bool:
    return "ByteLevel" in json.dumps(tok_json.get("pre_tokenizer")) or \
        (tok_json.get("decoder") or {}).get("type") == "ByteLevel"


def _steps(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return pre.get("pretokenizers") or pre.get("normalizers") or []
    return [pre]


def match_pre_tokenizer(tok_json: dict[str, Any]) -> tuple[str, str]:
    """(llama.cpp pre-tokenizer type, why) for a byte-level BPE tokenizer.json, or UnsupportedError."""
    steps = _steps(tok_json.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    byte_level = next((s for s in steps if s.get("type") == "ByteLevel"), None)
    if byte_level is None or byte_level.get("add_prefix_space"):
        raise UnsupportedError(None, f"pre-tokenizer {kinds} (ByteLevel add_prefix_space) has no llama.cpp match")
    if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
        return "gpt-2", "ByteLevel with its built-in GPT-2 regex = llama.cpp 'gpt-2'"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and byte_level.get("use_regex", True):
        return "starcoder", "single digits + GPT-2 regex = llama.cpp 'starcoder'"
    if kinds == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
        regex = (steps[0].get("pattern") or {}).get("Regex")
        if regex in SPLIT_REGEXES and steps[0].get("behavior") == "Isolated":
            name = SPLIT_REGEXES[regex]
            return name, f"Split regex identical to llama.cpp '{name}'"
    raise UnsupportedError(None, f"byte-level BPE pre-tokenizer {kinds} matches no llama.cpp pre-tokenizer type")


def _pad(tokens: list, types: list, scores: list | None, vocab_size: int) -> None:
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(TT.UNUSED)
        if scores is not None:
            scores.append(-1000.0)


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp's converter treats as control tokens even when not marked special."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _add_byte_level_bpe(writer, tok_dir: Path, tok_json: dict[str, Any], vocab_size: int) -> VocabInfo:
    from tokenizers import Tokenizer

    pre, why = match_pre_tokenizer(tok_json)
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = tok.get_added_tokens_decoder()
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TT.UNUSED)
            continue
        tokens.append(by_id[i])
        special = i in added and (added[i].special or looks_special(by_id[i]))
        types.append(TT.CONTROL if special else TT.USER_DEFINED if i in added else TT.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if tok_json.get("normalizer"):
        why += f"; note: normalizer {tok_json['normalizer'].get('type')} is not applied by llama.cpp"
    return VocabInfo("gpt2", pre, len(tokens), f"byte-level BPE, pre-tokenizer {why}")


def _add_sentencepiece(writer, tok_dir: Path, vocab_size: int) -> VocabInfo:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens.append(sp.IdToPiece(i))
        scores.append(sp.GetScore(i))
        types.append(TT.UNKNOWN if sp.IsUnknown(i) else TT.CONTROL if sp.IsControl(i) else
                     TT.UNUSED if sp.IsUnused(i) else TT.BYTE if sp.IsByte(i) else TT.NORMAL)
    _pad(tokens, types, scores, vocab_size)
    config = _read_json(tok_dir / "tokenizer_config.json") or {}
    for i, (content, is_special) in _added_tokens(tok_dir, config).items():
        if i < vocab_size and not (i < sp.vocab_size() and sp.IdToPiece(i) == content):
            special = is_special or looks_special(content)
            tokens[i] = content if special else content.replace("\u2581", " ")
            types[i], scores[i] = (TT.CONTROL if special else TT.USER_DEFINED), -1000.0
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    if (prefix := config.get("add_prefix_space")) is not None:
        writer.add_add_space_prefix(prefix)
    return VocabInfo("llama", "default", len(tokens), "sentencepiece BPE (tokenizer.model)")


def _added_tokens(tok_dir: Path, config: dict[str, Any]) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) of added tokens: transformers 5 keeps them in tokenizer.json, older
    checkpoints in tokenizer_config.json's ``added_tokens_decoder``."""
    added = {int(k): (v["content"], bool(v.get("special"))) for k, v in config.get("added_tokens_decoder", {}).items()}
    for entry in (_read_json(tok_dir / "tokenizer.json") or {}).get("added_tokens", []):
        added[int(entry["id"])] = (entry["content"], bool(entry.get("special")))
    return added


def _add_llama_hf(writer, tok_dir: Path) -> VocabInfo:
    vocab = gguf.LlamaHfVocab(tok_dir)
    tokens, scores, types = zip(*vocab.all_tokens())
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(tokens))
    writer.add_token_scores(list(scores))
    writer.add_token_types(list(types))
    return VocabInfo("llama", "default", len(tokens), "sentencepiece-style BPE with byte fallback (tokenizer.json)")
