"""GGUF files: llama.cpp's canonical tensor names, shared by every architecture it converts.

``blk.N.*`` / ``token_embd`` / ``output_norm`` form the language model, ``output`` the head; an mmproj
file holds the vision tower (``v.*``) and the projector (``mm.*``).
"""

from vlmkit.families.base import HEAD, LANGUAGE_MODEL, PROJECTOR, VISION_TOWER, Family

FAMILY = Family(
    name="gguf",
    model_types=(),
    components={
        "token_embd.": LANGUAGE_MODEL,
        "token_types.": LANGUAGE_MODEL,
        "position_embd.": LANGUAGE_MODEL,
        "token_embd_norm.": LANGUAGE_MODEL,
        "blk.": LANGUAGE_MODEL,
        "output_norm.": LANGUAGE_MODEL,
        "rope_freqs": LANGUAGE_MODEL,
        "output.": HEAD,
        "cls.": HEAD,
        "v.": VISION_TOWER,
        "mm.": PROJECTOR,
        "mm_input_projection.": PROJECTOR,
        "mm_soft_emb_norm.": PROJECTOR,
    },
    signature=("token_embd.", "v.patch_embd."),
    buffers=(),
)
