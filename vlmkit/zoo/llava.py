"""LLaVA replicas: cyberagent/llava-calm2-siglip and llava-hf/llava-1.5-7b-hf at tiny width.

Structure follows the real config.json files: calm2 has a SigLIP-so400m tower (no CLS token) with
``vision_feature_layer=-2`` and ``vision_feature_select_strategy="default"`` — so, as in the real
model, the first SigLIP patch is dropped and an image gives ``patches - 1`` tokens — a Llama LM with
bos = eos = 0 and pad = 1, rope_theta 500000, and a byte-level BPE tokenizer whose ``<image>`` token
sits after the learned vocabulary (65000 of 65024 in the real one). ``llava-string-template`` is the
same model with a template that reads ``content`` as a plain string (``USER: {{ content }}``). llava-1.5 has a CLIP tower
(CLS + patches, 'default' drops the CLS), a sentencepiece Llama tokenizer with ``<image>`` and
``<pad>`` added after the 32000 pieces.

Weights are saved in the hub layout (``language_model.model.*``, ``vision_tower.vision_model.*``,
``multi_modal_projector.*``), see :func:`vlmkit.zoo.common.rename_prefixes`.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.zoo import common
from vlmkit.zoo.tokenizers import (
    LLAVA15_CHAT_TEMPLATE,
    LLAVA_CHAT_TEMPLATE,
    STRING_CHAT_TEMPLATE,
    byte_level_tokenizer,
    sentencepiece_tokenizer,
    train_sentencepiece,
)

IMAGE_SIZE = 56
PATCH_SIZE = 14
LEGACY_VISION = {"vision_tower.": "vision_tower.vision_model."}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _text_config(vocab_size: int, **overrides):
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        initializer_range=common.TEXT_INIT_RANGE,
        tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def _vision_fields() -> dict:
    # 3 layers so that feature layer -2 leaves the last one unused, as in the real towers.
    return dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )


def _save_llava(config, processor, out: Path, generation: dict) -> None:
    from transformers import LlavaForConditionalGeneration

    model = common.make_model(LlavaForConditionalGeneration, config, common.ordinary_ids(processor.tokenizer))
    common.save_model(model, out, generation)
    common.rename_prefixes(out / "model.safetensors", LEGACY_VISION)
    processor.save_pretrained(str(out))
    # transformers 5 nests the image processor in processor_config.json; the hub repos (and
    # llama.cpp's converter) also have the classic preprocessor_config.json.
    processor.image_processor.save_pretrained(str(out))


def calm2_tokenizer(vocab_size: int = 500, texts=None):
    """calm2's layout: ``<|endoftext|>`` = 0 is bos/eos/unk, ``<|padding|>`` = 1, no BOS added; ``<image>``
    right after the ``vocab_size`` learned tokens (65000 in the real one)."""
    specials = {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|padding|>",
    }
    return byte_level_tokenizer(vocab_size, specials, extra_special=["<image>"], texts=texts)


def build_llava_string_template(out: Path) -> None:
    """llava-calm2-siglip with a chat template that renders ``content`` as a plain string."""
    build_llava_calm2_siglip(out, STRING_CHAT_TEMPLATE)


def build_llava_calm2_siglip(out: Path, chat_template: str = LLAVA_CHAT_TEMPLATE) -> None:
    from transformers import LlavaConfig, LlavaProcessor, SiglipImageProcessor, SiglipVisionConfig

    tokenizer = calm2_tokenizer()
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = _text_config(common.padded(len(tokenizer)), bos_token_id=0, eos_token_id=0, pad_token_id=1,
                        rope_theta=500000.0)
    vision = SiglipVisionConfig(hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, **_vision_fields())
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=patches - 1,
        pad_token_id=1,
        eos_token_id=0,
    )
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=0,
        chat_template=chat_template,
    )
    _save_llava(config, processor, out, {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1})


def llama_sp_tokenizer(workdir: Path, pieces: int = 640):
    """A Llama tokenizer (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte fallback) and its sentencepiece model."""
    from transformers import LlamaTokenizer

    model = train_sentencepiece(pieces)
    return sentencepiece_tokenizer(LlamaTokenizer, model, workdir), model


def build_llava_clip(out: Path) -> None:
    from tokenizers import AddedToken
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaProcessor

    tokenizer, sp_model = llama_sp_tokenizer(out / ".sp")
    tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken("<image>", special=True, normalized=False)]})
    tokenizer.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    pad_token = tokenizer.pad_token_id
    text = _text_config(common.padded(len(tokenizer)), bos_token_id=1, eos_token_id=2, pad_token_id=pad_token,
                        rms_norm_eps=1e-5)
    vision = CLIPVisionConfig(hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=64, **_vision_fields())
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=patches,
        pad_token_id=pad_token,
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=3,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA15_CHAT_TEMPLATE,
    )
    _save_llava(config, processor, out, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": pad_token})
    (out / "tokenizer.model").write_bytes(sp_model)
    common.remove_tree(out / ".sp")
