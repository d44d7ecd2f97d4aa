"""PaliGemma replica (google/paligemma-3b-pt-224 at tiny width): SigLIP tower, linear projector, Gemma LM.

As in the real config: no SigLIP attention-pooling head (``vision_use_head`` false), Gemma with one
KV head, tied embeddings (so no ``lm_head`` tensor on disk), a Gemma sentencepiece tokenizer
(``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3) followed by ``<image>`` and the 1024 ``<locNNNN>``
+ 128 ``<segNNN>`` tokens PaliGemmaProcessor expects, the embedding padded past them.
"""

from __future__ import annotations

from pathlib import Path

from vlmkit.zoo import common
from vlmkit.zoo.tokenizers import GEMMA_CHAT_TEMPLATE, sentencepiece_tokenizer, train_sentencepiece

IMAGE_SIZE = 56
PATCH_SIZE = 14
HIDDEN = 128


def gemma_tokenizer(workdir: Path):
    """The sentencepiece model and the transformers tokenizer with PaliGemma's added tokens."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer
    from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS

    sp_model = train_sentencepiece(640, pad=(0, "<pad>"), eos=(1, "<eos>"), bos=(2, "<bos>"), unk=(3, "<unk>"))
    tokenizer = sentencepiece_tokenizer(GemmaTokenizer, sp_model, workdir)
    image = AddedToken("<image>", special=True, normalized=False)
    tokenizer.add_special_tokens({"additional_special_tokens": [image]})
    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in EXTRA_TOKENS])
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer, sp_model


def _config(vocab_size: int, image_token: int):
    from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    vision = SiglipVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_use_head=False, projection_dim=HIDDEN,
    )
    text = GemmaConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, hidden_activation="gelu_pytorch_tanh",
        initializer_range=common.TEXT_INIT_RANGE, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )
    text.num_image_tokens = tokens
    return PaliGemmaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token, projection_dim=HIDDEN,
        hidden_size=HIDDEN, bos_token_id=2, eos_token_id=1, pad_token_id=0,
    )


def build_paligemma(out: Path) -> None:
    from transformers import PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessor

    tokenizer, sp_model = gemma_tokenizer(out / ".sp")
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    config = _config(common.padded(len(tokenizer)), image_token)
    model = common.make_model(PaliGemmaForConditionalGeneration, config)
    common.save_model(model, out, {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0})
    common.rename_prefixes(out / "model.safetensors", {"vision_tower.": "vision_tower.vision_model."})
    image_processor = SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3,
    )
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(str(out))
    image_processor.save_pretrained(str(out))
    (out / "tokenizer.model").write_bytes(sp_model)
    common.remove_tree(out / ".sp")
