"""The demo VLM's architecture, tokenizer and processor: stock transformers classes, tiny sizes.

Same structure as llava-calm2-siglip (SigLIP tower -> 2-layer GELU MLP projector -> Llama LM, a
byte-level BPE tokenizer, a "USER: / ASSISTANT:" chat template), so everything vlmkit does to the real
model (inspect, convert, quantize, run) it can do to this one, and the answers mean something.
Widths are multiples of 256 in the LM (llama.cpp K-quant blocks) and head_dim is 64 / 32.
"""

from __future__ import annotations

import random
from pathlib import Path

from vlmkit.demo.questions import corpus
from vlmkit.demo.scenes import IMAGE_SIZE, random_scene

PATCH_SIZE = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
EOS, PAD, IMAGE = "<|endoftext|>", "<pad>", "<image>"
VOCAB_SIZE = 512

# "USER: {question}\n<image>\nASSISTANT:". The question comes before the image so that, in the causal
# LM, every image token can attend to it and tell whether its patch answers it (see train.py: yes/no
# questions stayed at chance with the image first). The generation prompt ends at "ASSISTANT:" and
# answers start with a space, so " Yes" is one pre-token both in training text and after the prompt
# (byte-level BPE would split "ASSISTANT: ").
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- ('' if loop.first else '\\n') + 'USER: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- for item in message['content'] if item['type'] == 'image' -%}{{- '\\n<image>' -}}{%- endfor -%}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '\\nASSISTANT: ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] if item['type'] == 'text' -%}{{- item['text'] -}}{%- endfor -%}"
    "{%- endif -%}{{- eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '\\nASSISTANT:' -}}{%- endif -%}"
)


def train_tokenizer(seed: int = 0, scenes: int = 400):
    """Byte-level BPE (GPT-2 pre-tokenizer) trained on the dataset's English + Japanese text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(f"vlmkit-demo/tokenizer/{seed}")
    texts = corpus([random_scene(rng, big_lone=0.0) for _ in range(scenes)], rng)  # the first stage's scenes
    texts += ["USER: <image>\nASSISTANT:", "USER:\nASSISTANT:"] * 50
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS, PAD, IMAGE],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, bos_token=None,
                                   unk_token=None, extra_special_tokens={"image_token": IMAGE},
                                   chat_template=CHAT_TEMPLATE, model_max_length=512, padding_side="left")


def build_processor(tokenizer):
    from transformers import LlavaProcessor, SiglipImageProcessor

    images = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3, do_convert_rgb=True)
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0,
                          chat_template=CHAT_TEMPLATE, image_token=IMAGE)


def build_config(tokenizer):
    from transformers import LlamaConfig, LlavaConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                                num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                vision_use_head=False)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=4, head_dim=64, max_position_embeddings=512,
                       rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
                         projector_hidden_act="gelu", vision_feature_select_strategy="full",
                         vision_feature_layer=-1, image_seq_length=IMAGE_TOKENS, tie_word_embeddings=False)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return config


def save(model, processor, out: Path) -> None:
    """Save model (fp32 safetensors), tokenizer, processor and a greedy generation config.

    Atomic: written to a temp directory beside ``out``, then swapped in, so an interrupted save never
    leaves a half-written model (``out`` may be the package's own weights directory).
    """
    import shutil
    import tempfile

    from vlmkit.export.hf import rename_in_place

    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 8
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        model.save_pretrained(tmp)
        rename_in_place(tmp)  # tensor names vLLM and transformers 4/5 all load (transformers 5 writes others)
        processor.save_pretrained(tmp)
        tmp.chmod(0o755)
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)  # put the previous model back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
