"""transformers' own numbers for image questions: the checkpoint's processor and model, nothing of vlmkit's
prompt building, so tests of vlmkit's answer scoring (eval compare on image sets, the lmms-eval model) have a
reference that does not share their code."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def answer_token_logprobs(model_dir: Path, items: list[tuple]) -> list[np.ndarray]:
    """For each (image, question, answer): log p of each answer token after the chat template's user turn
    (image, then question) and generation prompt, the answer tokenized alone and appended."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for image, question, answer in items:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=prompt, images=[image], return_tensors="pt")
        tail = processor.tokenizer(answer, add_special_tokens=False, return_tensors="pt").input_ids
        ids = torch.cat([inputs.input_ids, tail], 1)
        with torch.inference_mode():
            logits = model(input_ids=ids, pixel_values=inputs.pixel_values).logits[0].float()
        rows = torch.log_softmax(logits[-tail.shape[1] - 1:-1], -1)
        out.append(rows[torch.arange(tail.shape[1]), tail[0]].numpy().astype(np.float64))
    return out
