"""A checkpoint tensor as a numpy array (bf16 through ``ml_dtypes``), for code that works in numpy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vlmkit.readers.base import Checkpoint


def load_numpy(checkpoint: Checkpoint, name: str) -> np.ndarray:
    import torch

    tensor = checkpoint.load(name).contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def array_reader(path: Path, checkpoint: Checkpoint) -> Callable[[str], np.ndarray]:
    """name -> array for code that streams a whole checkpoint. safetensors (validated by the reader)
    through plain reads into fresh buffers: pages of a memory map stay resident until it closes, so a
    stream over a mapped model ends with the whole model in the resident set."""
    if checkpoint.format != "safetensors":
        return lambda name: load_numpy(checkpoint, name)
    from vlmkit.gguf.source import TensorSource

    source = TensorSource(path)
    if set(source.tensors) != set(checkpoint.infos):   # a layout TensorSource indexes differently
        return lambda name: load_numpy(checkpoint, name)
    return source.read
