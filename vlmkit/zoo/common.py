"""Helpers shared by the zoo builders: seeding, weight shaping, saving in the hub's on-disk layout."""

from __future__ import annotations

import json
from pathlib import Path

SEED = 1234

TEXT_INIT_RANGE = 0.04
"""Init of the language models' linear layers: their outputs are ~0.3-0.6 per channel, so the
context moves the logits by several units without drowning the token's own embedding."""

EMBED_STD = 1.0
HEAD_STD = 0.3
BIGRAM_BOOST = 2.0
"""Greedy decoding without near-ties. Random logits of a random model have top-1 / top-2 gaps with
density at zero: over ~1000 positions some gap is ~1e-3 whatever the scale (scaling the head scales
the runtime's error too), and llama.cpp at f32 differs from transformers by ~4e-4. So each lm_head
row also gets ``BIGRAM_BOOST`` times the unit embedding of the tokens that should precede it (a
random permutation of the ordinary tokens): the next token is mostly decided by the current one with a
wide margin (measured on the llama replica: 99 % of positions, min gap 0.65, median 13.6, logit
std 5.4), while attention, MLPs and images still move all logits by several units, which logit
statistics (max abs diff, KLD) see."""


def make_model(model_cls, config, targets=None, seed: int = SEED):
    """Instantiate ``model_cls(config)`` with a fixed seed, weights rounded to bf16-exact float32.

    ``targets``: the ordinary token ids (no specials, no padding rows) that the bigram boost of an
    untied lm_head may predict; ``None`` leaves the head as transformers initialised it.

    bf16-exact values make a ``--dtype bf16`` conversion lossless, so conversion tests compare
    exact numbers; the file stays float32 so transformers computes in float32 by default.
    """
    import torch

    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        if targets is not None:
            _bigram_head(model, torch.as_tensor(list(targets)))
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16).to(torch.float32))
    return model


def _bigram_head(model, targets) -> None:
    import torch

    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    if head is embed:
        raise ValueError("the bigram boost needs an untied lm_head")
    embed.normal_(0.0, EMBED_STD)
    head.normal_(0.0, HEAD_STD)
    # ordinary tokens follow one random cycle structure (long cycles, varied text); others map anywhere
    successor = targets[torch.randint(len(targets), (embed.shape[0],))]
    successor[targets] = targets[torch.randperm(len(targets))]
    head.index_add_(0, successor, BIGRAM_BOOST * embed / embed.norm(dim=1, keepdim=True))


def ordinary_ids(tokenizer) -> list[int]:
    """Token ids a replica may be pushed to generate: not special, not added, not byte-fallback."""
    skip = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [i for i, piece in enumerate(pieces) if i not in skip and not piece.startswith("<0x")]


def rename_prefixes(path: Path, renames: dict[str, str]) -> None:
    """Rewrite ``model.safetensors`` keys ``old_prefix...`` -> ``new_prefix...`` in place.

    Used to give the file the key layout of the real hub checkpoint (written by transformers 4.x),
    e.g. ``vision_tower.vision_model.*``: transformers 5 reads both layouts but a freshly built
    model saves its own. The ``format: pt`` metadata matches what save_pretrained writes.
    """
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {}
    for key, tensor in tensors.items():
        for old, new in renames.items():
            if key.startswith(old) and not key.startswith(new):
                key = new + key[len(old):]
                break
        renamed[key] = tensor
    save_file(renamed, str(path), metadata={"format": "pt"})


def save_model(model, out: Path, generation: dict | None = None) -> None:
    """``save_pretrained`` (safetensors, one file) plus the generation_config the hub repos carry."""
    model.save_pretrained(str(out))
    if generation is not None:
        from transformers import GenerationConfig

        GenerationConfig(**generation).save_pretrained(str(out))


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def padded(n: int, multiple: int = 64) -> int:
    """Embedding rows padded like the real checkpoints (65024 for calm2, 32064 for llava-1.5)."""
    return -(-n // multiple) * multiple


def remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
