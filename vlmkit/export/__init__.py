"""Writers that leave vlmkit: HF safetensors from a foreign layout, big_vision ``.npz`` from HF, compressed-tensors
and quantized GGUF from ``vlmkit quantize``."""
