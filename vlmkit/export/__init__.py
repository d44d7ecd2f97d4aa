"""Writers that leave vlmkit: HF safetensors from a foreign layout or under the names every HF runtime
loads (hf.py), big_vision ``.npz`` from HF, compressed-tensors and quantized GGUF from ``vlmkit quantize``."""
