"""PaliGemma 1 and 2 (transformers ``PaliGemmaForConditionalGeneration``): SigLIP tower, one linear
projector, Gemma (1) or Gemma 2 (2) LM; and the same model as a big_vision JAX checkpoint (``.npz``).

The LM head is tied to the token embeddings, so HF checkpoints carry no ``lm_head`` tensor.

big_vision layout (``big_vision/models/proj/paligemma``, ``vit.py``, ``ppp/gemma.py``): the SigLIP
tower under ``img/`` (flax ``Dense`` kernels ``(in, out)``, attention kernels ``(D, heads, head_dim)``,
a ``(ph, pw, C, D)`` patch conv), its ``img/head`` Dense as the projector, Gemma under ``llm/`` with
einsum weights: ``q_einsum (N, D, H)``, ``kv_einsum (2, K, D, H)`` or ``qkv_einsum (3, N, D, H)`` when
K == N, ``attn_vec_einsum (N, H, D)``, ``gating_einsum (2, D, F)`` (gate, up), ``linear (F, D)``.
Scanned checkpoints stack every layer tensor on a leading axis (``llm/layers/...``,
``img/Transformer/encoderblock/...``); unscanned ones use ``llm/layers/{i}/`` and ``encoderblock_{i}``.
Gemma's RMSNorm scales by ``1 + scale`` in both frameworks, so norms copy unchanged; Gemma 2 adds
``post_attention_norm`` / ``post_ffw_norm`` and its ``pre_ffw_norm`` becomes ``pre_feedforward_layernorm``
(in Gemma 1 it is ``post_attention_layernorm``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from vlmkit.errors import UnsupportedError
from vlmkit.families.base import (
    HF_VLM_COMPONENTS,
    HF_VLM_DISK_NAMES,
    HF_VLM_TIED,
    LANGUAGE_MODEL,
    PROJECTOR,
    VISION_TOWER,
    Family,
)
from vlmkit.families.ops import LayerStack, Reshape, Rule, Transpose, Unstack, WeightMap

T = Transpose()
HEADS_TO_ROWS = (Transpose((0, 2, 1)), Reshape("N,H,D", "N*H,D"))       # (N, D, H) -> (N*H, D)
KV_HEADS_TO_ROWS = (Transpose((0, 2, 1)), Reshape("K,H,D", "K*H,D"))


def _vision_attention(bv: str, hf: str) -> tuple[Rule, ...]:
    return (
        Rule(f"MultiHeadDotProductAttention_0/{bv}/kernel", (f"self_attn.{hf}.weight",),
             (Reshape("vD,vN,vH", "vD,vN*vH"), T)),
        Rule(f"MultiHeadDotProductAttention_0/{bv}/bias", (f"self_attn.{hf}.bias",), (Reshape("vN,vH", "vN*vH"),)),
    )


VISION_LAYERS = LayerStack(
    stacked="img/Transformer/encoderblock/",
    unstacked=("img/Transformer/encoderblock_{i}/",),
    hf="vision_tower.vision_model.encoder.layers.{i}.",
    count="vL",
    rules=(
        Rule("LayerNorm_0/scale", ("layer_norm1.weight",)),
        Rule("LayerNorm_0/bias", ("layer_norm1.bias",)),
        *_vision_attention("query", "q_proj"),
        *_vision_attention("key", "k_proj"),
        *_vision_attention("value", "v_proj"),
        Rule("MultiHeadDotProductAttention_0/out/kernel", ("self_attn.out_proj.weight",),
             (Reshape("vN,vH,vD", "vN*vH,vD"), T)),
        Rule("MultiHeadDotProductAttention_0/out/bias", ("self_attn.out_proj.bias",)),
        Rule("LayerNorm_1/scale", ("layer_norm2.weight",)),
        Rule("LayerNorm_1/bias", ("layer_norm2.bias",)),
        Rule("MlpBlock_0/Dense_0/kernel", ("mlp.fc1.weight",), (T,)),
        Rule("MlpBlock_0/Dense_0/bias", ("mlp.fc1.bias",)),
        Rule("MlpBlock_0/Dense_1/kernel", ("mlp.fc2.weight",), (T,)),
        Rule("MlpBlock_0/Dense_1/bias", ("mlp.fc2.bias",)),
    ),
)

LM_LAYERS = LayerStack(
    stacked="llm/layers/",
    unstacked=("llm/layers/{i}/", "llm/layers_{i}/"),
    hf="language_model.model.layers.{i}.",
    count="L",
    rules=(
        Rule("pre_attention_norm/scale", ("input_layernorm.weight",)),
        Rule("attn/q_einsum/w", ("self_attn.q_proj.weight",), HEADS_TO_ROWS, only_if="!fused_qkv"),
        Rule("attn/kv_einsum/w", ("self_attn.k_proj.weight", "self_attn.v_proj.weight"),
             (Unstack(0), *KV_HEADS_TO_ROWS), only_if="!fused_qkv"),
        Rule("attn/qkv_einsum/w", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
             (Unstack(0), *HEADS_TO_ROWS), only_if="fused_qkv"),
        Rule("attn/attn_vec_einsum/w", ("self_attn.o_proj.weight",), (Reshape("N,H,D", "N*H,D"), T)),
        Rule("post_attention_norm/scale", ("post_attention_layernorm.weight",), only_if="post_norms"),
        Rule("pre_ffw_norm/scale", ("post_attention_layernorm.weight",), only_if="!post_norms"),
        Rule("pre_ffw_norm/scale", ("pre_feedforward_layernorm.weight",), only_if="post_norms"),
        Rule("mlp/gating_einsum", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), (Unstack(0), T)),
        Rule("mlp/linear", ("mlp.down_proj.weight",), (T,)),
        Rule("post_ffw_norm/scale", ("post_feedforward_layernorm.weight",), only_if="post_norms"),
    ),
)

TOP_RULES = (
    Rule("img/embedding/kernel", ("vision_tower.vision_model.embeddings.patch_embedding.weight",),
         (Transpose((3, 2, 0, 1)),)),
    Rule("img/embedding/bias", ("vision_tower.vision_model.embeddings.patch_embedding.bias",)),
    Rule("img/pos_embedding", ("vision_tower.vision_model.embeddings.position_embedding.weight",),
         (Reshape("1,vT,vD", "vT,vD"),)),
    Rule("img/Transformer/encoder_norm/scale", ("vision_tower.vision_model.post_layernorm.weight",)),
    Rule("img/Transformer/encoder_norm/bias", ("vision_tower.vision_model.post_layernorm.bias",)),
    Rule("img/head/kernel", ("multi_modal_projector.linear.weight",), (T,)),
    Rule("img/head/bias", ("multi_modal_projector.linear.bias",)),
    Rule("llm/embedder/input_embedding", ("language_model.model.embed_tokens.weight",)),
    Rule("llm/final_norm/scale", ("language_model.model.norm.weight",)),
)


def big_vision_dims(config: dict[str, Any]) -> dict[str, Any]:
    """The symbols the big_vision map's ops use, from an HF PaliGemma config."""
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    kv_heads = int(text.get("num_key_value_heads") or heads)
    v_hidden, v_heads = int(vision["hidden_size"]), int(vision["num_attention_heads"])
    patch = int(vision["patch_size"])
    return {
        "D": hidden, "N": heads, "K": kv_heads, "H": int(text.get("head_dim") or hidden // heads),
        "F": int(text["intermediate_size"]), "L": int(text["num_hidden_layers"]),
        "vD": v_hidden, "vN": v_heads, "vH": v_hidden // v_heads, "vF": int(vision["intermediate_size"]),
        "vL": int(vision["num_hidden_layers"]), "vT": (int(vision["image_size"]) // patch) ** 2,
        "fused_qkv": kv_heads == heads,
        "post_norms": text.get("model_type") == "gemma2",
    }


def config_from_big_vision(shapes: dict[str, tuple[int, ...]], counts: dict[str, int]) -> dict[str, Any]:
    """An HF PaliGemma config from the big_vision tensor shapes (folded: per-layer shapes, layer counts)."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise UnsupportedError(None, f"no '{name}' tensor: not a PaliGemma big_vision checkpoint")
        return shapes[name]

    patch, _, channels, v_hidden = shape("img/embedding/kernel")
    v_heads = shape("img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel")[1]
    vocab, hidden = shape("llm/embedder/input_embedding")
    if "llm/layers/attn/qkv_einsum/w" in shapes:
        _, heads, _, head_dim = shapes["llm/layers/attn/qkv_einsum/w"]
        kv_heads = heads
    else:
        heads, _, head_dim = shape("llm/layers/attn/q_einsum/w")
        kv_heads = shape("llm/layers/attn/kv_einsum/w")[1]
    gemma2 = "llm/layers/post_ffw_norm/scale" in shapes
    positions = shape("img/pos_embedding")[1]
    side = math.isqrt(positions)
    text = {
        "model_type": "gemma2" if gemma2 else "gemma", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": shape("llm/layers/mlp/gating_einsum")[2], "num_hidden_layers": counts["L"],
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6, "num_image_tokens": positions,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }
    if gemma2:  # big_vision's gemma2 variants: rsqrt_head_dim query scaling, soft-capping 50 / 30
        text.update(query_pre_attn_scalar=head_dim, attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": v_hidden, "num_attention_heads": v_heads,
        "intermediate_size": shape("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel")[1],
        "num_hidden_layers": counts["vL"], "patch_size": patch, "image_size": side * patch,
        "num_channels": channels, "projection_dim": hidden, "vision_use_head": False,
        "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
    }
    return {
        "architectures": ["PaliGemmaForConditionalGeneration"], "model_type": "paligemma",
        "text_config": text, "vision_config": vision, "projection_dim": hidden, "hidden_size": hidden,
        "image_token_index": vocab,  # big_vision has no <image> row: an id past the table, as transformers expects
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }


# --config presets (the published checkpoints' shapes; transformers' convert_paligemma{,2}_weights_to_hf)
_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16}
_GEMMA = {
    "paligemma-3b": {"hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
                     "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256},
    "paligemma2-3b": {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                      "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                      "query_pre_attn_scalar": 256},
    "paligemma2-10b": {"hidden_size": 3584, "intermediate_size": 14336, "num_hidden_layers": 42,
                       "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
                       "query_pre_attn_scalar": 256},
    "paligemma2-28b": {"hidden_size": 4608, "intermediate_size": 36864, "num_hidden_layers": 46,
                       "num_attention_heads": 32, "num_key_value_heads": 16, "head_dim": 128,
                       "query_pre_attn_scalar": 4608 // 32},   # rsqrt_emb_per_head: not the head size
}
_PRESET = re.compile(r"^(paligemma2?-\d+b)(?:-(?:pt|mix|ft)[\w.-]*?)?-(224|448|896)$")
PRESET_NAMES = tuple(f"{size}-pt-{px}" for size in _GEMMA for px in (224, 448, 896))


def preset(name: str) -> dict[str, Any] | None:
    """What ``--config paligemma-3b-pt-224`` (or ``paligemma2-10b-mix-448`` ...) fixes: {sub-config: fields}."""
    found = _PRESET.match(name)
    if not found:
        return None
    size, pixels = found.group(1), int(found.group(2))
    return {"text_config": dict(_GEMMA[size]), "vision_config": {**_SO400M, "image_size": pixels, "patch_size": 14}}


def write_processor(tokenizer_model, config: dict[str, Any], out_dir) -> int:
    """PaliGemmaProcessor files for ``out_dir`` from a sentencepiece ``tokenizer.model``; returns the
    ``<image>`` id (the processor adds ``<image>`` and the ``<locNNNN>`` / ``<segNNN>`` tokens it lacks)."""
    import shutil
    from pathlib import Path

    from transformers import GemmaTokenizer, PaliGemmaProcessor, SiglipImageProcessor

    out_dir = Path(out_dir)
    shutil.copyfile(tokenizer_model, out_dir / "tokenizer.model")
    tokenizer = GemmaTokenizer.from_pretrained(str(out_dir))
    tokenizer.init_kwargs.pop("vocab_file", None)
    vision = config["vision_config"]
    size = int(vision["image_size"])
    image_processor = SiglipImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3,
                                           image_std=[0.5] * 3, resample=3)
    image_processor.image_seq_length = (size // int(vision["patch_size"])) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab = int(config["text_config"]["vocab_size"])
    beyond = len(tokenizer) - vocab - (processor.image_token_id >= vocab)
    if beyond > 0:
        raise UnsupportedError(tokenizer_model, f"tokenizer has {len(tokenizer)} tokens with <image> and the "
                                                f"location/segmentation tokens, the embedding table {vocab} rows")
    processor.save_pretrained(str(out_dir))
    return int(processor.image_token_id)


BIG_VISION = WeightMap(
    format="big_vision",
    rules=TOP_RULES,
    stacks=(VISION_LAYERS, LM_LAYERS),
    dims=big_vision_dims,
    config_from_shapes=config_from_big_vision,
    prefixes=("params/",),
    presets=preset,
    preset_names=PRESET_NAMES,
    write_processor=write_processor,
    tokenizer_files=("tokenizer.model", "*tokenizer*.model"),
    hf_unmapped={
        r"lm_head\.weight$": "tied to the token embeddings (big_vision decodes with the embedding table)",
        r"position_ids$": "buffer, not a parameter",
    },
)

FAMILY = Family(
    name="paligemma",
    model_types=("paligemma",),
    architectures=("PaliGemmaForConditionalGeneration",),
    hf_class="PaliGemmaForConditionalGeneration",
    text_config="text_config",
    vision_config="vision_config",
    components={
        **HF_VLM_COMPONENTS,
        # big_vision JAX checkpoints (.npz), with or without the params/ prefix
        "params/img/": VISION_TOWER,
        "params/img/head/": PROJECTOR,
        "params/llm/": LANGUAGE_MODEL,
        "img/": VISION_TOWER,
        "img/head/": PROJECTOR,
        "llm/": LANGUAGE_MODEL,
    },
    signature=("params/img/", "params/llm/", "img/embedding/", "llm/embedder/"),
    processor_builds_prompt=True,   # prefix-LM: the processor writes image tokens + BOS + text + "\n"
    tied=HF_VLM_TIED,
    buffers=(r"position_ids$", r"\.rotary_emb\.inv_freq$", r"embed_scale$"),
    weight_maps={"big_vision": BIG_VISION},
    # transformers 5 names PaliGemma's SigLIP transformer directly (no ``vision_model.``)
    name_aliases={**HF_VLM_DISK_NAMES, "model.vision_tower.": "vision_tower.vision_model.",
                  "vision_tower.": "vision_tower.vision_model.",
                  "vision_tower.vision_model.": "vision_tower.vision_model."},
    config_fields=(
        "vision_config.image_size",
        "vision_config.patch_size",
        "vision_config.hidden_size",
        "vision_config.num_hidden_layers",
        "projection_dim",
        "image_token_index",
        "text_config.model_type",
        "text_config.hidden_size",
        "text_config.num_hidden_layers",
        "text_config.num_attention_heads",
        "text_config.num_key_value_heads",
        "text_config.head_dim",
        "text_config.vocab_size",
    ),
)
