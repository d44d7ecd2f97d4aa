"""A checkpoint tensor as a numpy array (bf16 through ``ml_dtypes``), for code that works in numpy."""

from __future__ import annotations

import numpy as np

from vlmkit.readers.base import Checkpoint


def load_numpy(checkpoint: Checkpoint, name: str) -> np.ndarray:
    import torch

    tensor = checkpoint.load(name).contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
