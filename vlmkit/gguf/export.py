"""Write the language model's GGUF (float types): metadata, tokenizer, then tensors streamed one by one."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from vlmkit.gguf.hparams import HPARAMS
from vlmkit.gguf.lm import FLOAT_TYPES, LmPlan, plan_lm
from vlmkit.gguf.source import TensorSource
from vlmkit.gguf.tokenizer import VocabInfo, add_vocab
from vlmkit.gguf.writer import write_gguf

_FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "bf16": gguf.LlamaFileType.MOSTLY_BF16}


@dataclass
class LmExport:
    arch: str
    family: str
    n_tensors: int
    dropped: dict[str, str]
    vocab: VocabInfo | None = None
    config: dict[str, Any] = field(default_factory=dict)


def lossless_float(source: TensorSource) -> str:
    """The float type that holds every source tensor exactly (input of llama.cpp's quantizer)."""
    dtypes = {t.dtype for t in source.tensors.values()}
    if dtypes <= {"F16"}:
        return "f16"
    if dtypes <= {"BF16"}:
        return "bf16"
    return "f32"


KEY_CONVERSION_ID = "vlmkit.conversion_id"
"""Stamped into model.gguf and mmproj.gguf by one ``vlmkit convert``: the runtime refuses a pair whose
stamps differ (an mmproj left over from another conversion feeds the wrong embedding space)."""


def write_lm_gguf(model_dir: Path, config: dict[str, Any], out: Path, dtype: str,
                  source: TensorSource | None = None, conversion_id: str | None = None) -> LmExport:
    source = source or TensorSource(model_dir)
    plan: LmPlan = plan_lm(model_dir, config, source, FLOAT_TYPES[dtype])
    result = LmExport(plan.arch, plan.family.name, len(plan.tensors), plan.dropped, config=plan.config)

    def add_kv(writer: gguf.GGUFWriter) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(Path(model_dir).resolve().name)
        writer.add_file_type(_FILE_TYPES[dtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        HPARAMS[plan.arch].add_kv(writer, plan.config, plan.hp)
        result.vocab = add_vocab(writer, Path(model_dir), plan.hp["vocab_size"])
        if conversion_id:
            writer.add_string(KEY_CONVERSION_ID, conversion_id)

    write_gguf(out, plan.arch, add_kv, plan.tensors)
    return result
