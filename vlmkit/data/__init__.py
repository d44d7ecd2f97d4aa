"""Local evaluation sets: see :mod:`vlmkit.data.vqa` for the on-disk format."""

from vlmkit.data.vqa import VQARecord, load_vqa, write_vqa

__all__ = ["VQARecord", "load_vqa", "write_vqa"]
