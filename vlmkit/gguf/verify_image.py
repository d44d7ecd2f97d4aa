"""Greedy tokens and teacher-forced logits *with an image*: transformers' LLaVA vs llama.cpp fed the
mmproj's image embeddings (mtmd) between the same text tokens. The image is a non-square photo
(``verify_photo``): each side resizes it as the checkpoint's processor does.

Both sides get identical token ids: the prompt is tokenized once by the HF processor and split around its
image-token run; llama.cpp receives mtmd's embedding rows in that run's place (``decode_image``, written by
the mmproj side). Only text positions at and after the image are compared (llama.cpp computes no logits for
image rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.metrics.logits import logit_stats, sequence_agreement

QUESTION = "What is in the picture?"


def verify_with_image(model_dir: Path, out_dir: Path, hf_model, llm, n_tokens: int = 16,
                      verbose: bool = False) -> dict[str, Any]:
    from vlmkit.gguf.mmproj_verify import verify_photo
    from vlmkit.gguf.mtmd import MtmdEncoder, decode_image

    photo, image = verify_photo()
    ids, pixel_values, start, stop = _hf_inputs(model_dir, hf_model, image)
    with MtmdEncoder(out_dir / "mmproj.gguf", out_dir / "model.gguf", verbose=verbose) as encoder:
        rows = encoder.encode(image, transformers_layout=True)
    if rows.shape[0] != stop - start:
        return {"skipped": f"mtmd gives {rows.shape[0]} image rows, transformers {stop - start}"}
    hf_out = _greedy_hf(hf_model, ids, pixel_values, n_tokens)
    prefix, suffix = ids[:start], ids[stop:]

    def feed(tail: list[int]) -> int:
        llm.reset()
        llm.eval(prefix)
        llm.n_tokens = decode_image(llm._ctx.ctx, rows, llm.n_tokens)  # Llama's own position counter
        first = llm.n_tokens
        llm.eval(tail)
        return first

    feed(suffix)
    ll_out = []
    for _ in range(n_tokens):
        ll_out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([ll_out[-1]])
    tail = suffix + hf_out
    first = feed(tail)
    cand = np.array(llm.scores[first:first + len(tail)], dtype=np.float32)
    ref = _logits_hf(hf_model, ids + hf_out, pixel_values)[stop:]
    same, first_diff = sequence_agreement(hf_out, ll_out)
    return {"prompt": QUESTION, "image": photo, "hf_tokens": hf_out, "gguf_tokens": ll_out, "n_same": same,
            "first_diff": first_diff, "teacher": logit_stats(ref, cand).as_dict()}


def _hf_inputs(model_dir: Path, model, image: np.ndarray):
    """The HF processor's inputs for QUESTION about ``image``, the prompt built as ``vlmkit run`` builds
    it for every template style (typed image parts, string content, no template)."""
    from PIL import Image
    from transformers import AutoProcessor

    from vlmkit.runtime.prompt import plain_render, template_errors, user_message, uses_typed_content

    processor = AutoProcessor.from_pretrained(model_dir)
    template = getattr(processor, "chat_template", None)
    placeholder = getattr(processor, "image_token", None) or "<image>"
    messages = [user_message(QUESTION, 1, uses_typed_content(template), placeholder)]
    if template:
        with template_errors():
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        prompt = plain_render(messages, placeholder)
    inputs = processor(images=Image.fromarray(image), text=prompt, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    token = getattr(model.config, "image_token_id", None) or model.config.image_token_index
    where = [i for i, t in enumerate(ids) if t == token]
    return ids, inputs["pixel_values"].float(), where[0], where[-1] + 1


def _greedy_hf(model, ids: list[int], pixel_values, n: int) -> list[int]:
    import torch

    out, past = [], None
    step, extra = torch.tensor([ids]), {"pixel_values": pixel_values}
    with torch.no_grad():
        for _ in range(n):
            result = model(step, past_key_values=past, use_cache=True, **extra)
            past, extra = result.past_key_values, {}
            out.append(int(result.logits[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def _logits_hf(model, ids: list[int], pixel_values) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids]), pixel_values=pixel_values).logits[0].float().numpy()
