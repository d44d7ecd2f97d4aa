"""The transformers side of ``convert --verify``, sized to the machine it runs on.

The reference is always transformers at float32 (the guarantee: the GGUF is compared with the source model
computed exactly, not with a bf16 approximation of it). How it is held depends on the memory available
(``vlmkit.memory.available_bytes``), checked before anything loads:

* ``whole``: transformers' own model, all of it at f32 (the check as ``vlmkit run`` would load it);
* ``staged``: the same model class built with one decoder block (``vlmkit.quant.capture.StagedModel``, the
  machinery ``vlmkit quantize`` calibrates with): vision tower, projector, embeddings, norm and head are
  transformers' own modules with the real weights, and the checkpoint's blocks are loaded one at a time,
  every sequence of the check going through each block before the next is read. Peak memory is everything
  outside the blocks plus one block, so a 7.5 B model checks in ~7 GB instead of 30 GB.

llama.cpp's side runs first and is closed before the reference loads, so the two never share the memory.
When not even the staged reference fits beside what llama.cpp needs, ``plan_reference`` raises an
``UnsupportedError`` whose one line says how much memory the check needs and what would make it run.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit import memory
from vlmkit.errors import UnsupportedError
from vlmkit.families import family_for
from vlmkit.families.base import LANGUAGE_MODEL
from vlmkit.runtime.transformers_backend import TransformersBackend

GIB = 1 << 30
# the interpreter with torch + transformers imported, activations, logits rows, llama.cpp's KV cache
MARGIN_BYTES = 2 * GIB
# a staged block in memory: the template block, the copy being filled and the tensors read for it
BLOCK_COPIES = 3


@dataclass(frozen=True)
class ReferencePlan:
    mode: str                 # "whole" | "staged"
    whole_bytes: int          # peak of the check with the whole reference model
    staged_bytes: int         # peak with the staged reference
    llama_bytes: int          # peak of llama.cpp's side (its GGUF files are memory-mapped and all read)
    available: int            # memory available when the check was planned

    @property
    def need_bytes(self) -> int:
        return max(self.llama_bytes, self.whole_bytes if self.mode == "whole" else self.staged_bytes)

    def note(self) -> str | None:
        if self.mode == "whole":
            return None
        return (f"parity reference: transformers at f32 one decoder block at a time (the whole model at f32 "
                f"needs {gib(self.whole_bytes)}, {gib(self.available)} available; this check: "
                f"{gib(self.need_bytes)})")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "need_bytes": self.need_bytes, "whole_bytes": self.whole_bytes,
                "staged_bytes": self.staged_bytes, "llama_bytes": self.llama_bytes, "available": self.available}


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class _Sizes:
    whole: int        # every tensor at f32
    outside: int      # tensors outside the language model's decoder blocks, at f32
    block: int        # the largest decoder block at f32


def _sizes(model_dir: Path) -> _Sizes:
    from vlmkit.memory import _layer_index
    from vlmkit.readers import open_checkpoint
    from vlmkit.readers.model_files import read_config

    with open_checkpoint(model_dir) as checkpoint:
        infos = list(checkpoint.infos.values())
    family, _ = family_for(read_config(model_dir) or {}, [info.name for info in infos])
    blocks: dict[int, int] = {}
    outside = 0
    for info in infos:
        layer = _layer_index(info.name) if family.component_of(info.name) == LANGUAGE_MODEL else None
        if layer is None:
            outside += info.numel * 4
        else:
            blocks[layer] = blocks.get(layer, 0) + info.numel * 4
    return _Sizes(outside + sum(blocks.values()), outside, max(blocks.values(), default=0))


def plan_reference(model_dir: Path, gguf_files: Sequence[Path], available: int | None = None) -> ReferencePlan:
    """Whole when it fits, staged when only that fits; otherwise a one-line ``UnsupportedError``."""
    sizes = _sizes(model_dir)
    present = [Path(f) for f in gguf_files if Path(f).is_file()]
    ggufs = sum(f.stat().st_size for f in present)
    mmproj = sum(f.stat().st_size for f in present if f.name.startswith("mmproj"))
    available = memory.available_bytes() if available is None else available
    llama = ggufs + MARGIN_BYTES
    whole = sizes.whole + mmproj + MARGIN_BYTES            # the image check runs mtmd beside the reference
    staged = sizes.outside + BLOCK_COPIES * sizes.block + mmproj + MARGIN_BYTES
    for mode, need in (("whole", whole), ("staged", staged)):
        if max(llama, need) <= available:
            return ReferencePlan(mode, whole, staged, llama, available)
    if llama > available:
        cure = (f"llama.cpp's copy of the GGUF alone needs {gib(llama)}: a smaller --dtype (q8_0, q4_k_m) "
                f"checks in less, or free that much memory")
    else:
        cure = f"free {gib(staged - available)} more memory to run it"
    raise UnsupportedError(model_dir, f"the parity check needs {gib(max(llama, staged))} of memory at its "
                                      f"smallest (transformers at f32 one block at a time), {gib(available)} "
                                      f"available: not run; {cure}")


class ReferenceBackend(TransformersBackend):
    """Transformers at f32 as the check's reference: tokenizer and processor at once, the weights on
    ``load()`` (after llama.cpp's side is done), whole or staged as ``plan`` says."""

    def __init__(self, path: Path, plan: ReferencePlan, threads: int | None = None, verbose: bool = False):
        super().__init__(path, device="cpu", dtype="f32", threads=threads, verbose=verbose, load_weights=False)
        self.plan = plan
        self.staged: Any = None

    def load(self) -> None:
        if self.plan.mode == "whole":
            self.load_weights("f32")
            return
        from vlmkit.quant.capture import StagedModel
        from vlmkit.readers import open_checkpoint

        checkpoint = open_checkpoint(self.path)
        family, _ = family_for(self.config.to_dict(), list(checkpoint.infos))
        self.staged = StagedModel(self.path, checkpoint, family, self.auto_class)
        self.model = self.staged.model   # vision tower, projector, embeddings and head: the real ones

    def generate_ids(self, prompt: Any, params: Any) -> Any:
        if self.staged is not None:  # the one-block model would generate nonsense
            raise UnsupportedError(self.path, "the staged reference scores given tokens only (logits_many)")
        return super().generate_ids(prompt, params)

    def logits(self, token_ids: Sequence[int], images: Sequence[Any] = ()) -> Any:
        return self.logits_many([(token_ids, images)])[0]

    def logits_many(self, requests: Sequence[tuple[Sequence[int], Sequence[Any]]],
                    progress: bool | None = None) -> list[np.ndarray]:
        """Teacher-forced logits of the text rows of each (token ids, images); staged: every request goes
        through each block before the next block is read (one pass over the weights)."""
        if self.staged is None:
            return [super(ReferenceBackend, self).logits(ids, images) for ids, images in requests]
        from tqdm.auto import tqdm

        from vlmkit.quant.capture import run_block

        prepared = [self.forward_inputs(ids, images) for ids, images in requests]
        items = [self.staged.capture(inputs) for inputs, _ in prepared]
        hidden = [item.hidden for item in items]
        show = sys.stderr.isatty() if progress is None else progress
        for index in tqdm(range(self.staged.n_blocks), desc="reference: transformers f32, block by block",
                          unit="block", disable=not show, leave=False):
            block = self.staged.load_block(index)
            hidden = [run_block(block, item, h) for item, h in zip(items, hidden)]
            del block
        return [self.staged.logits(inputs, h)[rows].numpy() for (inputs, rows), h in zip(prepared, hidden)]

    def close(self) -> None:
        if self.staged is not None:
            self.staged.checkpoint.close()
            self.staged = None
        super().close()


def open_reference(model_dir: Path, gguf_files: Sequence[Path], threads: int | None = None,
                   verbose: bool = False) -> ReferenceBackend:
    """The planned reference for checking ``gguf_files`` against ``model_dir`` (its transformers folder)."""
    from vlmkit.runtime.registry import validate_hf

    validate_hf(model_dir)
    plan = plan_reference(model_dir, gguf_files)
    return ReferenceBackend(model_dir, plan, threads, verbose)
