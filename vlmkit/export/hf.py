"""HF checkpoints that every HF consumer loads: tensor names by the family's export rule.

vLLM, transformers 4.x and transformers 5 disagree on which LLaVA tensor names they accept (see
``vlmkit.families.llava``); the family declares the one layout all of them read and every HF writer in vlmkit
goes through :func:`export_names`. :func:`convert_to_hf` is ``vlmkit convert MODEL --to hf``: the same tensors, bytes
unchanged, under those names, streamed tensor by tensor, written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmkit.errors import VlmkitError
from vlmkit.export.big_vision import MapResult
from vlmkit.readers.model_files import read_config as read_config_file
from vlmkit.readers import Checkpoint, open_checkpoint

INDEX_FILE = "model.safetensors.index.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


def export_names(names: Iterable[str], config: dict[str, Any]) -> dict[str, str]:
    """Every tensor name -> the name an exported HF checkpoint gives it (the family's rule)."""
    from vlmkit.families import family_for

    names = list(names)
    family, _ = family_for(config, names)
    return {name: family.export_name(name, config) for name in names}


def layout_faults(names: Iterable[str], config: dict[str, Any]) -> dict[str, str]:
    """The tensors whose names some HF consumer refuses, each with the name that all of them accept."""
    return {old: new for old, new in export_names(names, config).items() if old != new}


def convert_to_hf(model_dir: Path, checkpoint: Checkpoint, out_dir: Path, overwrite: bool = False) -> MapResult:
    """``vlmkit convert MODEL --to hf``: the same tensors and bytes under the names every HF runtime loads."""
    from vlmkit.export.atomic import atomic_dir

    start = time.perf_counter()
    config = _config(model_dir)
    names = export_names(checkpoint, config)
    with atomic_dir(out_dir, overwrite) as tmp:
        _copy_side_files(model_dir, tmp)
        write_renamed(checkpoint, names, tmp)
    renamed = fold_renames({old: new for old, new in names.items() if old != new})
    layout = ", ".join(f"{old}* -> {new}*" for old, new in renamed.items()) or "names unchanged (already loadable)"
    return MapResult(out=str(out_dir), direction="hf -> hf", family=_family_name(config, names), tensors_in=len(names),
                     tensors_out=len(names), layout=layout, config_from="copied", seconds=time.perf_counter() - start)


def _config(model_dir: Path) -> dict[str, Any]:
    config = read_config_file(model_dir)
    if config is None:
        raise VlmkitError(model_dir, "no config.json: --to hf rewrites a Hugging Face checkpoint directory")
    return config


def rename_in_place(model_dir: Path) -> None:
    """Apply the export rule to a directory vlmkit itself is writing (after ``save_pretrained``)."""
    with open_checkpoint(model_dir) as checkpoint:
        names = export_names(checkpoint, _config(model_dir))
        if all(old == new for old, new in names.items()):
            return
        tmp = Path(tempfile.mkdtemp(prefix=".names-", dir=model_dir))
        try:
            write_renamed(checkpoint, names, tmp)
            for item in tmp.iterdir():
                os.replace(item, model_dir / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def write_renamed(checkpoint: Checkpoint, names: dict[str, str], out: Path) -> None:
    """One safetensors file per source file (same file names), tensors renamed and streamed one at a time; an
    index when sharded."""
    from vlmkit.export.safetensors_writer import write_safetensors

    by_file: dict[Path, list[str]] = {}
    for name, info in checkpoint.infos.items():
        by_file.setdefault(info.file, []).append(name)
    weight_map: dict[str, str] = {}
    for number, (source, tensor_names) in enumerate(sorted(by_file.items()), 1):
        target = _shard_name(source, number, len(by_file))
        infos = [checkpoint.infos[n] for n in tensor_names]
        plan = [(names[i.name], i.shape, i.dtype) for i in infos]
        write_safetensors(out / target, plan, ((names[n], checkpoint.read(n)) for n in tensor_names))
        weight_map.update(dict.fromkeys((names[n] for n in tensor_names), target))
    if len(by_file) > 1:
        total = sum(info.nbytes for info in checkpoint.infos.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def fold_renames(renames: dict[str, str]) -> dict[str, str]:
    """``{old: new}`` per tensor -> per prefix (the segments before the names agree again)."""
    folded: dict[str, str] = {}
    for old, new in renames.items():
        o, n = old.split("."), new.split(".")
        same = 0
        while same < min(len(o), len(n)) - 1 and o[-1 - same] == n[-1 - same]:
            same += 1
        folded.setdefault(".".join(o[:len(o) - same]) + ".", ".".join(n[:len(n) - same]) + ".")
    return folded


def _shard_name(source: Path, number: int, count: int) -> str:
    if source.suffix == ".safetensors":
        return source.name
    return "model.safetensors" if count == 1 else f"model-{number:05d}-of-{count:05d}.safetensors"


def _copy_side_files(model_dir: Path, out: Path) -> None:
    """config, tokenizer, processor, chat template ...: everything but the weights, as it is."""
    for item in sorted(model_dir.iterdir()):
        if item.name.startswith(".") or item.name.endswith(WEIGHT_SUFFIXES):
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name)
        else:
            shutil.copy2(item, out / item.name)


def _family_name(config: dict[str, Any], names: dict[str, str]) -> str:
    from vlmkit.families import family_for

    return family_for(config, names)[0].name
