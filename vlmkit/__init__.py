"""vlmkit: inspect, convert, quantize, run and evaluate VLMs and LLMs in Hugging Face format."""

from vlmkit.errors import CheckpointError, UnsupportedError, VlmkitError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "UnsupportedError", "VlmkitError", "__version__"]


def load(*args, **kwargs):  # noqa: ANN002, ANN003 - see vlmkit.api.load
    """Load a model for generation (``vlmkit.api.load``); imported lazily so ``import vlmkit`` stays light."""
    from vlmkit.api import load as _load

    return _load(*args, **kwargs)


def quantize(*args, **kwargs):  # noqa: ANN002, ANN003 - see vlmkit.quant.pipeline.quantize
    """Quantize a model's language-model Linears (RTN / AWQ / GPTQ) and export it (``vlmkit.quant.pipeline``)."""
    from vlmkit.quant.pipeline import quantize as _quantize

    return _quantize(*args, **kwargs)
