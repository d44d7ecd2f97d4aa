"""Text-only replicas: cyberagent/open-calm (GPT-NeoX) and a Llama with a sentencepiece tokenizer.

open-calm's real config.json (all sizes): ``rotary_pct`` 1.0, ``use_parallel_residual`` false,
untied embeddings, gelu MLP of 4x width, bos = eos = 0 (``<|endoftext|>``), ``<|padding|>`` = 1,
GPTNeoXTokenizer byte-level BPE. transformers 5 writes ``rotary_pct`` as
``rope_parameters.partial_rotary_factor`` (the cause of llama.cpp's ``KeyError: 'rotary_pct'``).

The Llama has grouped-query attention (4 query heads, 2 KV heads) so converters meet the
``n_head_kv`` path of llama.cpp's Q/K permutation.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.zoo import common
from vlmkit.zoo.llava import calm2_tokenizer, llama_sp_tokenizer
from vlmkit.zoo.tokenizers import LLAMA_CHAT_TEMPLATE, LLAVA_CHAT_TEMPLATE, save_tokenizer


def build_opencalm(out: Path) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = calm2_tokenizer()
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE  # calm2-chat's USER:/ASSISTANT: turns
    config = GPTNeoXConfig(
        vocab_size=common.padded(len(tokenizer)),
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=1024,
        hidden_act="gelu",
        max_position_embeddings=2048,
        layer_norm_eps=1e-5,
        initializer_range=common.TEXT_INIT_RANGE,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
        use_parallel_residual=False,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    model = common.make_model(GPTNeoXForCausalLM, config, common.ordinary_ids(tokenizer))
    common.save_model(model, out, {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1})
    tokenizer.save_pretrained(str(out))


def build_llama(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer, sp_model = llama_sp_tokenizer(out / ".sp", pieces=768)
    tokenizer.chat_template = LLAMA_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        initializer_range=common.TEXT_INIT_RANGE,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = common.make_model(LlamaForCausalLM, config, common.ordinary_ids(tokenizer))
    common.save_model(model, out, {"bos_token_id": 1, "eos_token_id": 2})
    save_tokenizer(tokenizer, out, sp_model)
    common.remove_tree(out / ".sp")
