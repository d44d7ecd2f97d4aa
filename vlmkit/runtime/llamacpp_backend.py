"""The llama.cpp backend: a GGUF (plus ``mmproj.gguf`` for images) through llama-cpp-python.

The prompt is the GGUF's ``tokenizer.chat_template`` rendered by transformers' own Jinja renderer,
so both backends see the same text; images go through mtmd (llama.cpp's multimodal library), the
template's image text (``<image>``) replaced by mtmd's media marker. Sampling uses a sampler chain
ordered like transformers' logits processors (see ``vlmkit.llamacpp.native.sampler_chain``).

Residual differences from transformers at equal settings: the random draws (std::mt19937 vs torch:
the same seed gives different samples, each reproducible on its backend), top-k ties (llama.cpp keeps
exactly k, transformers every logit equal to the k-th), top-p at exactly the boundary, and float
rounding (ggml's fp16 GELU table and f16 KV cache, quantized weights). Images are resized by the
checkpoint's own image processor before mtmd sees them (``vlmkit.llamacpp.pixels.ModelPixels``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.llamacpp.loading import bindings, load_model, model_params
from vlmkit.llamacpp.settings import cpu_settings
from vlmkit.gguf_keys import KEY_CONVERSION_ID, KEY_PREPEND_SCHEME
from vlmkit.runtime import llamacpp_logits
from vlmkit.llamacpp import native
from vlmkit.runtime.base import Message, Prompt, SamplingParams
from vlmkit.runtime.prompt import (
    add_special_tokens,
    import_renderer_early,
    plain_render,
    render_template,
    template_image_text,
    uses_typed_content,
)

MAX_CTX = 4096  # KV cache cap: a 32k training context would allocate GBs of f16 KV up front
KV_STEP = 512   # the KV cache is allocated for what a run needs, in steps of this many positions, up to n_ctx
PREPEND_SCHEME_KEY = KEY_PREPEND_SCHEME
"""Written by ``vlmkit convert`` (``vlmkit.gguf.tokenizer``) for sentencepiece tokenizers whose tokenizer.json
has Metaspace ``prepend_scheme: "first"`` (transformers 5's default): "▁" is prepended only at the very
start of the text, never after a special token. llama.cpp's ``add_space_prefix`` cannot say that (it
prefixes every text after a special token), so the backend turns it off and adds the one leading space itself."""


def gguf_fields(path: Path, *keys: str) -> dict[str, str]:
    """The string values of ``keys`` the GGUF holds (one walk of its KV section, no tensor read)."""
    from vlmkit.readers.gguf_layout import read_values

    try:
        return {key: str(value) for key, value in read_values(path, keys).items()}
    except (OSError, VlmkitError, ValueError):  # a corrupt file: llama.cpp's own message says more
        return {}


def gguf_field(path: Path, key: str) -> str | None:
    return gguf_fields(path, key).get(key)


class LlamaCppBackend:
    """A GGUF model and context; ``mmproj`` enables images through mtmd."""

    name = "llamacpp"

    def __init__(self, model_path: Path, mmproj: Path | None = None, device: str = "auto",
                 threads: int | None = None, verbose: bool = False):
        llama_cpp = bindings()  # UnsupportedError naming the pip extra when llama-cpp-python is missing
        native.install_log(verbose)
        self.path, self.mmproj_path, self.mtmd = Path(model_path), mmproj, None
        self.settings = cpu_settings(threads)
        self.threads = self.settings.threads
        self.ctx, self.kv_size = None, 0   # made by context_for, at the size the first prompt needs
        renderer = import_renderer_early()
        self.model = self._load_model(llama_cpp, device)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = min(llama_cpp.llama_model_n_ctx_train(self.model), MAX_CTX)
        self.n_batch = min(self.n_ctx, 2048)
        self.template = native.meta_str(self.model, "tokenizer.chat_template")
        renderer.join()
        if self.template is not None:
            self._check_template()
        self.special = self._special_tokens(llama_cpp)
        if mmproj is not None:
            from vlmkit.llamacpp.mtmd import Mtmd

            self._check_pair(Path(mmproj))

            try:
                self.mtmd = Mtmd(mmproj, self.model, use_gpu=self.gpu_layers != 0, threads=self.threads)
            except Exception:
                self.close()
                raise

    def _check_template(self) -> None:
        """The chat template, rendered once in the sandbox on a probe: refused in one line before anything runs."""
        from vlmkit.readers.model_files import check_template_text

        try:
            check_template_text(self.path, self.template)
        except Exception:
            self.close()
            raise

    def _check_pair(self, mmproj: Path) -> None:
        """Refuse an mmproj stamped by another ``vlmkit convert`` than the model (its embeddings are for
        another language model, or an older conversion of this one)."""
        ours, theirs = self._meta.get(KEY_CONVERSION_ID), gguf_field(mmproj, KEY_CONVERSION_ID)
        if ours and theirs and ours != theirs:
            self.close()
            raise VlmkitError(mmproj, f"comes from another conversion than {self.path.name} ({KEY_CONVERSION_ID} "
                                      f"{theirs[:8]} vs {ours[:8]}): convert again into an empty --out")

    def _load_model(self, llama_cpp: Any, device: str) -> Any:
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda"):
            raise VlmkitError(None, f"unknown device {device!r} (use cpu, cuda or auto)")
        gpu = llama_cpp.llama_supports_gpu_offload()
        if device.startswith("cuda") and not gpu:
            raise UnsupportedError(None, "--device cuda: this llama-cpp-python build has no GPU support")
        self.gpu_layers = -1 if gpu and device != "cpu" else 0
        params = model_params(self.gpu_layers, mmap=self.settings.mmap)
        self._meta = gguf_fields(self.path, PREPEND_SCHEME_KEY, KEY_CONVERSION_ID)
        self.prepend_first = self._meta.get(PREPEND_SCHEME_KEY) == "first"
        if self.prepend_first:
            self._overrides = native.kv_overrides({"tokenizer.ggml.add_space_prefix": False})
            params.kv_overrides = self._overrides
        try:
            return load_model(self.path, params)
        except VlmkitError:
            arch = gguf_field(self.path, "general.architecture") or "?"
            raise UnsupportedError(self.path, f"llama.cpp cannot load this GGUF (architecture {arch}): "
                                              f"{native.last_error()}") from None

    def context_for(self, n_positions: int) -> Any:
        """The context, its KV cache holding at least ``n_positions`` (in ``KV_STEP`` steps, at most ``n_ctx``):
        an answer about one image needs ~1k positions of a 4k context, and a 7 B model's f16 KV cache takes
        0.5 MB a position, all allocated (and cleared) up front."""
        want = min(self.n_ctx, -(-max(n_positions, 1) // KV_STEP) * KV_STEP)
        if want > self.kv_size:
            llama_cpp = bindings()
            if self.ctx:
                llama_cpp.llama_free(self.ctx)
            self.ctx = None
            self.ctx = self._new_context(llama_cpp, want)
            self.kv_size = want
        return self.ctx

    def _new_context(self, llama_cpp: Any, n_positions: int) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = n_positions
        params.n_ubatch = min(self.settings.n_ubatch, n_positions)
        params.no_perf = True
        params.n_threads = params.n_threads_batch = self.threads
        if self.settings.flash_attn is not None:
            params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.settings.flash_attn
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise VlmkitError(self.path, f"llama.cpp could not create a context: {native.last_error()}")
        return ctx

    def _special_tokens(self, llama_cpp: Any) -> dict[str, str]:
        """bos/eos/unk/pad token strings, the variables transformers hands chat templates."""
        ids = {"bos_token": llama_cpp.llama_vocab_bos(self.vocab), "eos_token": llama_cpp.llama_vocab_eos(self.vocab),
               "pad_token": llama_cpp.llama_vocab_pad(self.vocab)}
        texts = {name: native.token_text(self.vocab, token) for name, token in ids.items()}
        return {name: text for name, text in texts.items() if text is not None}

    def chat_template(self) -> str | None:
        return self.template

    @property
    def image_placeholder(self) -> str | None:
        """What stands for an image in string content: mtmd's marker (None without an mmproj)."""
        return self.mtmd.marker if self.mtmd is not None else None

    def image_texts(self) -> tuple[str, ...]:
        """Texts a user's prompt must not contain: they would be taken for images."""
        if self.mtmd is None:
            return ()
        return tuple(t for t in (self.mtmd.marker, self.image_text or "<image>") if t)

    def render(self, messages: Sequence[Message], n_images: int = 0) -> str:
        """Typed-content templates write their own image text (``<image>``), replaced by mtmd's marker;
        string-content templates and plain prompts already hold the marker (``image_placeholder``)."""
        if self.template is None:
            return plain_render(messages, self.image_placeholder)
        text = render_template(self.template, messages, self.special)
        if not n_images or not uses_typed_content(self.template):
            return text
        if self.image_text is None:
            raise UnsupportedError(self.path, "the GGUF's chat template has no place for images")
        return text.replace(self.image_text, self.mtmd.marker)

    @property
    def image_text(self) -> str | None:
        """What the chat template writes for an image (``<image>``), replaced by mtmd's marker."""
        if self.template is None:
            return None
        if not hasattr(self, "_image_text"):
            self._image_text = template_image_text(self.template, self.special)
        return self._image_text

    def prepare(self, messages: Sequence[Message], images: Sequence[Any]) -> Prompt:
        if images and self.mtmd is None:
            raise UnsupportedError(self.path, "images need the model's mmproj.gguf beside it (vlmkit convert "
                                              "writes one for VLMs); none found")
        text = self.render(messages, len(images))
        special = add_special_tokens(text, self.special.get("bos_token"), self.template is not None,
                                     self.mtmd is not None)
        raw = self.llama_text(text)
        if self.mtmd is not None:
            chunks = self.mtmd.tokenize(raw, images, special, self.image_text or "<image>")
            prompt = Prompt(text=text, n_tokens=chunks.n_positions, payload=chunks)
        else:
            tokens = native.tokenize(self.vocab, raw, special)  # == self.tokenize(text, special)
            prompt = Prompt(text=text, n_tokens=len(tokens), payload=tokens)
        if prompt.n_tokens >= self.n_ctx:
            raise VlmkitError(None, f"the prompt is {prompt.n_tokens} tokens, longer than the context "
                                    f"of {self.n_ctx} tokens")
        return prompt

    def llama_text(self, text: str) -> str:
        """The text handed to llama.cpp's tokenizer: with ``prepend_scheme: "first"`` one leading space
        when the text opens with plain text (transformers' Metaspace adds "▁" only there)."""
        if self.prepend_first and text and not native.starts_with_special(self.vocab, text):
            return " " + text
        return text

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return native.tokenize(self.vocab, self.llama_text(text), add_special)

    def _evaluate(self, prompt: Prompt, new_tokens: int) -> list[int]:
        """Fill the KV cache with the prompt (sized for ``new_tokens`` more); return the token ids seen (for
        the penalty window)."""
        llama_cpp = bindings()

        self.context_for(prompt.n_tokens + new_tokens)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        if isinstance(prompt.payload, list):
            native.decode_tokens(self.ctx, prompt.payload, self.n_batch)
            return prompt.payload
        return self.mtmd.evaluate(prompt.payload, self.ctx, self.n_batch)

    def generate_ids(self, prompt: Prompt, params: SamplingParams) -> Iterator[int]:
        llama_cpp = bindings()

        budget = min(params.max_new_tokens, self.n_ctx - prompt.n_tokens)
        seen = self._evaluate(prompt, budget)
        chain = native.sampler_chain(self.n_vocab, self.n_ctx, params)
        try:
            for token in seen:
                llama_cpp.llama_sampler_accept(chain, token)
            for step in range(budget):
                token = llama_cpp.llama_sampler_sample(chain, self.ctx, -1)
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    return
                yield token
                if step + 1 < budget:
                    native.decode_tokens(self.ctx, [token], 1)
        finally:
            llama_cpp.llama_sampler_free(chain)

    def decode(self, ids: Sequence[int]) -> str:
        text = native.detokenize(self.vocab, ids)
        # llama.cpp drops the first piece's "▁" space only when add_space_prefix is on, which prepend_first
        # turns off (see PREPEND_SCHEME_KEY); transformers' Metaspace decoder drops it: do the same
        return text[1:] if self.prepend_first and text.startswith(" ") else text

    # --- teacher-forced scoring (vlmkit.eval), in vlmkit.runtime.llamacpp_logits -----------------------

    def bos_to_add(self) -> int | None:
        return llamacpp_logits.bos_to_add(self)

    def special_ids(self) -> dict[str, int | None]:
        return llamacpp_logits.special_ids(self)

    def text_prompt(self, ids: Sequence[int]) -> Prompt:
        return Prompt(text="", n_tokens=len(ids), payload=list(ids))

    def encode(self, messages: Sequence[Message], images: Sequence[Any]) -> list[int]:
        return llamacpp_logits.encode(self, messages, images)

    def logits(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> Any:
        return llamacpp_logits.teacher_forced(self, token_ids, images)

    def image_embeddings(self, image: Any) -> Any:
        if self.mtmd is None:
            raise UnsupportedError(self.path, "no mmproj.gguf: this model has no vision tower here")
        return self.mtmd.encode_image(image)

    def close(self) -> None:
        llama_cpp = bindings()

        if self.mtmd is not None:
            self.mtmd.close()
            self.mtmd = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

