"""Quantization: RTN, AWQ and GPTQ on image+text calibration, block by block, from the family declaration.

``quantize(...)`` (in :mod:`vlmkit.quant.pipeline`) is the public entry point; ``vlmkit quantize`` wraps it.
"""

from __future__ import annotations

from typing import Any


def quantize(*args: Any, **kwargs: Any):
    from vlmkit.quant.pipeline import quantize as _quantize

    return _quantize(*args, **kwargs)
