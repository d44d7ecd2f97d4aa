"""The transformers backend: an HF model directory run with ``model.generate()``.

Generation is transformers' own ``generate()`` (so greedy tokens are exactly the reference); a
streamer running it in a worker thread hands token ids out one at a time, the pattern of
transformers' ``TextIteratorStreamer``, which we cannot use directly because it yields text and
we need ids (stop strings and token counts are handled above the backend, once for both backends).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmkit.constants import NUMPY_DTYPES, float_dtype
from vlmkit.errors import UnsupportedError, VlmkitError, error_summary
from vlmkit.families import family_for
from vlmkit.logs import quiet_output, quiet_transformers
from vlmkit.runtime.base import IMAGE, Message, Prompt, SamplingParams
from vlmkit.runtime.prompt import add_special_tokens, plain_render, template_errors



def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError(None, "--device cuda: this torch build sees no CUDA device")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise VlmkitError(None, f"unknown device {device!r} (use cpu, cuda or auto)")
    return device


def pick_dtype(dtype: str | None) -> Any:
    import torch

    if dtype is None or dtype.lower() == "auto":
        return "auto"
    return getattr(torch, NUMPY_DTYPES[float_dtype(dtype)])   # the same names as numpy's: float32, bfloat16 ...


def model_class(path: Path) -> tuple[Any, bool]:
    """(auto class, is_vlm) for the checkpoint, or a one-line UnsupportedError; no remote code runs."""
    import transformers
    from transformers.models.auto import modeling_auto as auto

    config_file = path / "config.json"
    if not config_file.is_file():
        raise VlmkitError(path, "no config.json: not a Hugging Face model directory (or pass a GGUF file)")
    raw = json.loads(config_file.read_text())
    arch = ", ".join(raw.get("architectures") or [raw.get("model_type", "?")])
    try:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - ValueError, KeyError, huggingface_hub's validation errors ...
        reason = (error_summary(error).split(". ")[0] or error.__class__.__name__).strip()
        raise UnsupportedError(config_file, f"transformers cannot run architecture {arch} ({reason})") from None
    model_type = config.model_type
    if model_type in auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return transformers.AutoModelForImageTextToText, True
    encoder_only = model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not encoder_only:
        return transformers.AutoModelForCausalLM, False
    raise UnsupportedError(config_file, f"architecture {arch} is not a text-generation model (encoder-only "
                                        f"or without a language-model head)")


class _IdStreamer:
    """A transformers streamer that queues generated ids (the first ``put`` is the prompt: skipped)."""

    def __init__(self) -> None:
        self.ids: queue.Queue[Any] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.ids.put(int(token))

    def end(self) -> None:
        self.ids.put(None)


def _decompress_now(model) -> None:
    """A compressed-tensors checkpoint loads packed and is decompressed by a hook at the first forward, with a
    progress bar in the middle of the answer; the same ``decompress_model`` is run here, inside the quiet load
    (the weights are dense from the first forward on either way)."""
    compressor = getattr(getattr(model, "hf_quantizer", None), "compressor", None)
    if compressor is not None and getattr(model, "ct_decompress_hook", None) is not None:
        compressor.decompress_model(model)


class TransformersBackend:
    """An HF checkpoint loaded with its Auto class, processor or tokenizer, on one device."""

    name = "transformers"

    def __init__(self, path: Path, device: str = "auto", dtype: str | None = None, threads: int | None = None,
                 verbose: bool = False, load_weights: bool = True):
        """``load_weights=False`` gives the prompt side only (``render`` / ``prepare``): ``vlmkit quantize``
        builds its calibration inputs exactly as ``vlmkit run`` does while it streams the weights itself."""
        import torch
        import transformers

        quiet_transformers(verbose)
        if threads:
            torch.set_num_threads(threads)
        self.verbose = verbose
        self.path = Path(path)
        self.auto_class, self.is_vlm = model_class(self.path)
        self.device = pick_device(device)
        self.processor = self._load_processor()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.model = None
        if load_weights:
            self.load_weights(dtype)
        config = self.model.config if self.model is not None else transformers.AutoConfig.from_pretrained(self.path)
        self.config = config
        # a processor that builds the whole prompt (PaliGemma): a template or <image> would double its tokens
        self.raw_prompt = family_for(config.to_dict())[0].processor_builds_prompt
        text_config = config.get_text_config()
        self.n_ctx = int(getattr(text_config, "max_position_embeddings", 0) or 1 << 20)

    def load_weights(self, dtype: str | None) -> None:
        with quiet_output(self.verbose):  # compressed-tensors' own tqdm bars, which no setting turns off
            model = self.auto_class.from_pretrained(self.path, dtype=pick_dtype(dtype))
            _decompress_now(model)
        self.model = model.to(self.device).eval()

    def _load_processor(self) -> Any:
        import transformers

        try:
            if self.is_vlm:
                return transformers.AutoProcessor.from_pretrained(self.path)
            return transformers.AutoTokenizer.from_pretrained(self.path)
        except (OSError, ValueError) as error:
            raise VlmkitError(self.path, f"cannot load the tokenizer/processor: {error}") from None

    def chat_template(self) -> str | None:
        if self.raw_prompt:
            return None
        return getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)

    @property
    def image_placeholder(self) -> str | None:
        """The text the processor expands into image tokens (None: text-only; "" when the processor
        builds the whole prompt itself)."""
        if not self.is_vlm:
            return None
        return "" if self.raw_prompt else getattr(self.processor, "image_token", None) or "<image>"

    def image_texts(self) -> tuple[str, ...]:
        """Texts a user's prompt must not contain: the processor would take them for images."""
        return (self.image_placeholder,) if self.image_placeholder else ()

    def render(self, messages: Sequence[Message], n_images: int = 0) -> str:
        if self.chat_template() is None:
            return plain_render(messages, self.image_placeholder)
        with template_errors():
            return self.processor.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)

    def prepare(self, messages: Sequence[Message], images: Sequence[Any]) -> Prompt:
        if images and not self.is_vlm:
            raise UnsupportedError(self.path, "this is a text-only model: it cannot take images")
        if self.raw_prompt and not images:
            raise UnsupportedError(self.path, f"{type(self.processor).__name__} builds its prompt around an image: "
                                              "give one with --image")
        text = self.render(messages, len(images))
        special = add_special_tokens(text, self.tokenizer.bos_token, self.chat_template() is not None, self.is_vlm)
        if self.is_vlm:
            inputs = self.processor(images=list(images) or None, text=text, add_special_tokens=special,
                                    return_tensors="pt")
        else:
            inputs = self.tokenizer(text, add_special_tokens=special, return_tensors="pt")
        n_tokens = int(inputs["input_ids"].shape[1])
        if n_tokens >= self.n_ctx:
            raise VlmkitError(None, f"the prompt is {n_tokens} tokens, longer than the context "
                                    f"of {self.n_ctx} tokens")
        return Prompt(text=text, n_tokens=n_tokens, payload=inputs.to(self.device))

    def generation_config(self, params: SamplingParams, n_prompt: int) -> Any:
        """A fresh GenerationConfig: the checkpoint's generation_config.json defaults (top_k=50, ...)
        would otherwise change what our flags mean."""
        from transformers import GenerationConfig

        defaults = self.model.generation_config
        eos = defaults.eos_token_id if defaults.eos_token_id is not None else self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        sampling = {} if params.greedy else {"temperature": params.temperature, "top_k": params.top_k,
                                             "top_p": params.top_p}
        return GenerationConfig(
            max_new_tokens=min(params.max_new_tokens, self.n_ctx - n_prompt), do_sample=not params.greedy,
            repetition_penalty=params.repetition_penalty, eos_token_id=eos,
            pad_token_id=pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
            bos_token_id=defaults.bos_token_id, **sampling)

    def eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def generate_ids(self, prompt: Prompt, params: SamplingParams) -> Iterator[int]:
        import torch
        from transformers import StoppingCriteria

        cancel = threading.Event()

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        streamer, errors = _IdStreamer(), []
        config = self.generation_config(params, prompt.n_tokens)

        def work() -> None:
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    self.model.generate(**prompt.payload, generation_config=config, streamer=streamer,
                                        stopping_criteria=[Cancelled()])
            except Exception as error:  # re-raised in the consuming thread
                errors.append(error)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from self._drain(streamer, errors, cancel, thread)

    def _drain(self, streamer: _IdStreamer, errors: list, cancel: threading.Event,
               thread: threading.Thread) -> Iterator[int]:
        eos = self.eos_ids()
        try:
            while (token := streamer.ids.get()) is not None:
                if token in eos:
                    break
                yield token
        finally:
            cancel.set()
            thread.join()
        if errors:
            raise errors[0]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # --- teacher-forced scoring (vlmkit.eval) -------------------------------------------------------

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special).input_ids)

    def text_prompt(self, ids: Sequence[int]) -> Prompt:
        """A prompt of raw token ids (no chat template), for ``generate_ids``."""
        import torch

        tensor = torch.tensor([list(ids)], device=self.device)
        return Prompt(text="", n_tokens=len(ids), payload={"input_ids": tensor, "attention_mask": torch.ones_like(tensor)})

    def special_ids(self) -> dict[str, int | None]:
        return {"bos": self.tokenizer.bos_token_id, "eos": self.tokenizer.eos_token_id}

    def bos_to_add(self) -> int | None:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None and self.tokenize("a", True)[:1] == [bos] else None

    @property
    def image_token_id(self) -> int | None:
        config = self.config
        return getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)

    def encode(self, messages: Sequence[Message], images: Sequence[Any]) -> list[int]:
        if images and (not self.is_vlm or self.raw_prompt):
            raise UnsupportedError(self.path, "scoring image prompts needs a chat-style VLM (image placeholder "
                                              "in the prompt)")
        text = self.render(messages, len(images))
        special = add_special_tokens(text, self.tokenizer.bos_token, self.chat_template() is not None, self.is_vlm)
        ids = self.tokenize(text, special)
        ids = [IMAGE if t == self.image_token_id else t for t in ids] if images else ids
        if ids.count(IMAGE) != len(images):
            raise VlmkitError(self.path, f"the prompt holds {ids.count(IMAGE)} image places for {len(images)} images")
        return ids

    def _image_inputs(self, images: Sequence[Any]) -> tuple[list[list[int]], dict[str, Any]]:
        """Per image its run of image-token ids, and the tensors (pixel_values ...) the model takes."""
        placeholder = self.image_placeholder
        inputs = self.processor(images=list(images), text=placeholder * len(images), add_special_tokens=False,
                                return_tensors="pt")
        run = [t for t in inputs["input_ids"][0].tolist() if t == self.image_token_id]
        size = len(run) // len(images)
        extra = {k: v.to(self.device) for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        return [run[i * size:(i + 1) * size] for i in range(len(images))], extra

    def logits(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> Any:
        import torch

        inputs, text_rows = self.forward_inputs(token_ids, images)
        with torch.inference_mode():
            out = self.model(**inputs).logits[0]
            return out[text_rows].float().cpu().numpy()

    def forward_inputs(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> tuple[dict[str, Any], list[int]]:
        """The model's keyword inputs for ``token_ids`` (each ``IMAGE`` expanded into its image-token run) and
        the rows of the text tokens in the expanded sequence."""
        import torch

        ids = list(token_ids)
        if ids.count(IMAGE) != len(images):
            raise VlmkitError(None, f"{ids.count(IMAGE)} image places in the token ids for {len(images)} images")
        runs, extra = self._image_inputs(images) if images else ([], {})
        expanded: list[int] = []
        text_rows: list[int] = []
        for token in ids:
            if token == IMAGE:
                expanded += runs.pop(0)
            else:
                text_rows.append(len(expanded))
                expanded.append(token)
        return {"input_ids": torch.tensor([expanded], device=self.device), **extra}, text_rows

    def image_embeddings(self, image: Any) -> Any:
        import torch

        _, extra = self._image_inputs([image])
        with torch.inference_mode():
            out = self.model.get_image_features(**extra)
        features = getattr(out, "pooler_output", out)
        features = features[0] if isinstance(features, (list, tuple)) else features
        return features.reshape(-1, features.shape[-1]).float().cpu().numpy()

    def close(self) -> None:
        self.model = None
