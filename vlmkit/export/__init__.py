"""Writers that leave vlmkit: HF safetensors from a foreign layout, big_vision ``.npz`` from HF."""
