"""Write the language model's GGUF (float types): metadata, tokenizer, then tensors streamed one by one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from vlmkit.constants import output_type
from vlmkit.families import family_hook
from vlmkit.gguf.lm import LmPlan, plan_lm
from vlmkit.gguf.tokenizer import VocabInfo, add_vocab
from vlmkit.gguf.writer import write_gguf
from vlmkit.readers import Checkpoint


@dataclass
class LmExport:
    arch: str
    family: str
    n_tensors: int
    dropped: dict[str, str]
    vocab: VocabInfo | None = None
    config: dict[str, Any] = field(default_factory=dict)


def lossless_float(source: Checkpoint) -> str:
    """The float type that holds every source tensor exactly (input of llama.cpp's quantizer)."""
    dtypes = {t.dtype for t in source.infos.values()}
    if dtypes <= {"F16"}:
        return "f16"
    if dtypes <= {"BF16"}:
        return "bf16"
    return "f32"


from vlmkit.gguf_keys import KEY_CONVERSION_ID  # noqa: E402  (written here)
"""Stamped into model.gguf and mmproj.gguf by one ``vlmkit convert``: the runtime refuses a pair whose
stamps differ (an mmproj left over from another conversion feeds the wrong embedding space)."""


def write_lm_gguf(model_dir: Path, config: dict[str, Any], out: Path, dtype: str,
                  source: Checkpoint, conversion_id: str | None = None,
                  replace: Callable[[LmPlan], Any] | None = None, file_type: gguf.LlamaFileType | None = None
                  ) -> LmExport:
    """Write the float (f32 / f16 / bf16) language-model GGUF from ``source``, the validated checkpoint.
    ``replace`` may swap planned tensors (``vlmkit quantize`` writes its own Q4_0 / Q8_0 blocks) and
    ``file_type`` then names the result's type."""
    kind = output_type(dtype)
    plan: LmPlan = plan_lm(model_dir, config, source, kind.ggml_type)
    if replace is not None:
        replace(plan)
    result = LmExport(plan.arch, plan.family.name, len(plan.tensors), plan.dropped, config=plan.config)

    def add_kv(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(Path(model_dir).resolve().name)
        writer.add_file_type(file_type if file_type is not None else kind.llama_file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        family_hook(plan.text_family, "gguf_kv")(writer, plan.config, plan.hp)
        result.vocab = add_vocab(writer, Path(model_dir), plan.hp["vocab_size"])
        if conversion_id:
            writer.add_string(KEY_CONVERSION_ID, conversion_id)

    write_gguf(out, plan.arch, add_kv, plan.tensors)
    return result
