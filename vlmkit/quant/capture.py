"""Block-by-block input capture on the model's own forward, with weights streamed from the checkpoint.

The model is built from its config with a single decoder block: the vision tower, projector, embeddings,
rotary tables, final norm and head are transformers' own modules, loaded from the checkpoint reader. The one
block is swapped for a catcher that records the arguments transformers passes to the first block (hidden
states, masks, position embeddings) and stops the forward there; the real blocks are then loaded one at a
time into a copy of the template block. Peak memory is the non-block parts plus one block plus the
activations, never the whole model. No tracing: whatever the model's forward does before its first block
(image features merged at the image tokens, LLaVA's feature-layer selection ...) is what transformers does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmkit.errors import CheckpointError, UnsupportedError
from vlmkit.families import Family
from vlmkit.families.base import LANGUAGE_MODEL
from vlmkit.readers import Checkpoint


@dataclass
class BlockInput:
    """What transformers passed to a decoder block for one sample: hidden states plus the rest."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict[str, Any]


class _Stop(Exception):
    pass


class _Catcher(nn.Module):
    def __init__(self, inner: nn.Module, sink: list[BlockInput]):
        super().__init__()
        self.inner, self.sink = inner, sink

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.sink.append(BlockInput(hidden_states.detach(), args, kwargs))
        raise _Stop

    def __getattr__(self, name: str) -> Any:  # models read attributes of their blocks (attention_type ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


class _Injector(_Catcher):
    """Returns given final hidden states in place of the blocks, so the model's own norm and head run."""

    def __init__(self, inner: nn.Module, hidden: torch.Tensor):
        super().__init__(inner, [])
        self.hidden = hidden

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.hidden


def block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def run_block(block: nn.Module, item: BlockInput, hidden: torch.Tensor | None = None) -> torch.Tensor:
    with torch.inference_mode():
        return block_output(block(item.hidden if hidden is None else hidden, *item.args, **item.kwargs))


def memory_names(model: nn.Module, disk_names: list[str]) -> dict[str, str]:
    """On-disk tensor name -> the name transformers gives it in memory, by transformers' own loading rules
    (``language_model.model.layers.0.x`` -> ``model.language_model.layers.0.x``,
    ``vision_tower.vision_model.x`` -> ``model.vision_tower.x`` ...)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import (
        WeightConverter,
        WeightRenaming,
        rename_source_key,
    )

    conversions = get_model_conversion_mapping(model)
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    state = model.state_dict()
    return {name: rename_source_key(name, renamings, converters, model.base_model_prefix, state)[0]
            for name in disk_names}


def read_tensor(checkpoint: Checkpoint, name: str) -> torch.Tensor:
    """One tensor by plain file reads (``Checkpoint.read``): a block read through the memory map would keep
    its pages in the process's resident set, so streaming every block would show the whole checkpoint."""
    import numpy as np

    array = checkpoint.read(name)
    if array.dtype.name == "bfloat16":   # ml_dtypes: torch has no numpy bfloat16
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


class StagedModel:
    """A transformers model with one decoder block; the checkpoint's blocks are loaded one at a time."""

    def __init__(self, folder: Path, checkpoint: Checkpoint, family: Family, auto_class: Any):
        import transformers

        self.folder, self.checkpoint, self.family = folder, checkpoint, family
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        text = config.get_text_config()
        self.n_blocks = int(text.num_hidden_layers)
        text.num_hidden_layers = 1
        if isinstance(getattr(text, "layer_types", None), list):
            text.layer_types = text.layer_types[:1]
        self.config = config
        self.model = auto_class.from_config(config, dtype=torch.float32).eval()
        self.blocks_name, self.blocks = self._find_blocks()
        self.template = self.blocks[0]
        self._disk = {memory: disk for disk, memory in memory_names(self.model, list(checkpoint.infos)).items()}
        self._load_outside_blocks()

    def _find_blocks(self) -> tuple[str, nn.ModuleList]:
        for name, module in self.model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == 1 and \
                    self.family.component_of(f"{name}.0.") == LANGUAGE_MODEL:
                return name, module
        raise UnsupportedError(self.folder, "cannot find the language model's decoder blocks in the "
                                            f"{type(self.model).__name__} built from config.json")

    def disk_name(self, memory_name: str) -> str | None:
        return self._disk.get(memory_name)

    def _load_outside_blocks(self) -> None:
        """Everything but the blocks, from the checkpoint; a parameter the checkpoint lacks must be tied to
        one it has (an LM head sharing the embedding's storage)."""
        state, missing = {}, []
        for name in self.model.state_dict():
            if name.startswith(self.blocks_name + "."):
                continue
            disk = self.disk_name(name)
            if disk is None:
                missing.append(name)
            else:
                state[name] = read_tensor(self.checkpoint, disk)
        self.model.load_state_dict(state, strict=False)
        params = dict(self.model.named_parameters(remove_duplicate=False))
        loaded = {params[n].data_ptr() for n in state if n in params}
        for name in missing:
            if name in params and params[name].data_ptr() not in loaded:
                raise CheckpointError(self.checkpoint.path, f"no tensor for {name} in the checkpoint")

    def block_tensor_names(self, index: int) -> dict[str, str]:
        """The block's own tensor name -> the checkpoint's name of that tensor for block ``index``."""
        names = {rel: self.disk_name(f"{self.blocks_name}.{index}.{rel}") for rel in self.template.state_dict()}
        missing = [rel for rel, disk in names.items() if disk is None]
        if missing:
            raise CheckpointError(self.checkpoint.path, f"block {index}: no tensor for {', '.join(missing[:3])}")
        return names  # type: ignore[return-value]

    def load_block(self, index: int) -> nn.Module:
        """Block ``index``'s weights, loaded into the staged model's one block (the template) and returned: the
        template's own weights are never computed with (capture stops before it, ``logits`` replaces it), so
        one block's weights are held, not two; the previous block's are overwritten (every persistent
        tensor, AWQ's folded norms included)."""
        state = {rel: read_tensor(self.checkpoint, disk) for rel, disk in self.block_tensor_names(index).items()}
        self.template.load_state_dict(state, strict=True)
        return self.template.eval()

    def capture(self, inputs: dict[str, Any]) -> BlockInput:
        """The first block's inputs for one prepared sample (``processor(...)`` output)."""
        sink: list[BlockInput] = []
        self.blocks[0] = _Catcher(self.template, sink)
        try:
            with torch.inference_mode():
                self.model(**inputs, use_cache=False)
        except _Stop:
            pass
        finally:
            self.blocks[0] = self.template
        if not sink:
            raise UnsupportedError(self.folder, "the model's forward never reached its first decoder block")
        return sink[0]

    def logits(self, inputs: dict[str, Any], final_hidden: torch.Tensor) -> torch.Tensor:
        """The model's own final norm and head applied to the last block's output: [positions, vocab]."""
        self.blocks[0] = _Injector(self.template, final_hidden)
        try:
            with torch.inference_mode():
                out = self.model(**inputs, use_cache=False)
        finally:
            self.blocks[0] = self.template
        return out.logits[0].float()
