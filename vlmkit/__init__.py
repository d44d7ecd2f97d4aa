"""vlmkit: inspect, convert, quantize, run and evaluate VLMs and LLMs in Hugging Face format."""

from vlmkit.errors import CheckpointError, UnsupportedError, VlmkitError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "UnsupportedError", "VlmkitError", "__version__"]
