"""big_vision ``.npz`` <-> Hugging Face checkpoints, driven by the family's ``weight_maps["big_vision"]``.

Nothing here knows a model: the family declares which tensor becomes which and how (see
``vlmkit.families.ops``), the HF config (inferred from the shapes, a ``--config`` preset, or a
``config.json``) and the processor. Tensors stream one foreign tensor at a time (a scanned tensor holds
every layer); shapes are checked against the transformers model built on the meta device before a
byte is written; outputs appear atomically. The layout of the source npz (``params/`` prefix,
scanned or not) is kept in the safetensors metadata, so npz -> HF -> npz gives the same npz.
"""

from __future__ import annotations

import fnmatch
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError, VlmkitError
from vlmkit.export.atomic import atomic_dir, atomic_file
from vlmkit.export.safetensors_writer import write_safetensors
from vlmkit.families import Family, family_for
from vlmkit.families.ops import Layout, WeightMap, forward_shapes, require_known, run_backward, run_forward
from vlmkit.readers.base import Checkpoint

FORMAT = "big_vision"
LAYOUT_KEY = "vlmkit.big_vision_layout"
HF_FILE = "model.safetensors"


@dataclass
class MapResult:
    """What a big_vision <-> HF conversion wrote."""

    out: str
    direction: str
    family: str
    tensors_in: int
    tensors_out: int
    layout: str
    config_from: str
    tokenizer: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def weight_map_of(family: Family, path: Any) -> WeightMap:
    found = family.weight_maps.get(FORMAT)
    if found is None:
        raise UnsupportedError(path, f"no big_vision mapping for the {family.name} family")
    return found


def npz_family(checkpoint: Checkpoint) -> tuple[Family, WeightMap]:
    family, guessed = family_for({}, checkpoint.infos)
    if guessed:
        raise UnsupportedError(checkpoint.path, "not a big_vision checkpoint of a known family "
                                                "(expected img/... and llm/... arrays)")
    return family, weight_map_of(family, checkpoint.path)


# --- big_vision -> HF ----------------------------------------------------------------------------
def big_vision_to_hf(checkpoint: Checkpoint, out_dir: Path, *, config: str | None = None,
                     tokenizer: str | Path | None = None, overwrite: bool = False,
                     progress: bool = False) -> MapResult:
    """Write ``out_dir`` (model.safetensors, config.json, processor files when a tokenizer is given
    or lies beside the npz) from a big_vision checkpoint."""
    start = time.perf_counter()
    family, wmap = npz_family(checkpoint)
    shapes = {name: info.shape for name, info in checkpoint.infos.items()}
    try:
        hf_config, config_from = resolve_config(wmap, shapes, config)
    except VlmkitError as error:
        raise type(error)(error.path or checkpoint.path, error.reason) from None
    tokenizer_path = _find_tokenizer(wmap, checkpoint.path, tokenizer)
    layout = wmap.layout_of(shapes)
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        if tokenizer_path is not None:
            if wmap.write_processor is None:
                raise UnsupportedError(tokenizer_path, f"the {family.name} family declares no processor")
            hf_config["image_token_index"] = wmap.write_processor(tokenizer_path, hf_config, tmp)
        dims = wmap.dims(hf_config)
        steps, unknown = wmap.plan_forward(shapes, dims)
        require_known(unknown, "HF" + (f" (with --config {config})" if config else ""), checkpoint.path)
        plan = [(name, shape, checkpoint.infos[step.source].dtype)
                for step in steps for name, shape in _step_shapes(step, shapes, dims, checkpoint.path)]
        model_config = check_against_model(family, wmap, hf_config, {n: s for n, s, _ in plan}, checkpoint.path)
        _save_config(model_config, plan, tmp)
        write_safetensors(tmp / HF_FILE, plan, _forward_arrays(checkpoint, steps, dims, progress),
                          {LAYOUT_KEY: layout.encode()})
    return MapResult(str(out_dir), "big_vision -> hf", family.name, len(shapes), len(plan), layout.describe(wmap.stacks),
                     config_from, str(tokenizer_path) if tokenizer_path else None, time.perf_counter() - start)


def resolve_config(wmap: WeightMap, shapes: dict[str, tuple[int, ...]], config: str | None) -> tuple[dict, str]:
    """The HF config: a config.json, else the one the shapes imply with a preset's fields on top."""
    if config and Path(config).is_file():
        try:
            return json.loads(Path(config).read_text()), config
        except json.JSONDecodeError as error:
            raise VlmkitError(config, f"invalid JSON ({error.msg} at line {error.lineno})") from None
    if wmap.config_from_shapes is None:
        raise UnsupportedError(None, "this family cannot infer a config from shapes: pass --config config.json")
    inferred = wmap.config_from_shapes(*wmap.folded_shapes(shapes))
    if not config:
        return inferred, "inferred from the checkpoint's shapes"
    fixed = wmap.presets(config) if wmap.presets else None
    if fixed is None:
        raise VlmkitError(config, "--config is neither a config.json file nor a known preset "
                                  f"({', '.join(wmap.preset_names)})")
    for key, value in fixed.items():
        inferred[key] = {**inferred.get(key, {}), **value} if isinstance(value, dict) else value
    return inferred, f"preset {config}"


def _find_tokenizer(wmap: WeightMap, path: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        if not Path(given).is_file():
            raise VlmkitError(given, "tokenizer file not found")
        return Path(given)
    folder = path if path.is_dir() else path.parent
    for pattern in wmap.tokenizer_files:
        found = sorted(p for p in folder.iterdir() if fnmatch.fnmatch(p.name, pattern))
        if found:
            return found[0]
    return None


def _step_shapes(step, shapes, dims, path) -> list[tuple[str, tuple[int, ...]]]:
    try:
        return forward_shapes(step, shapes[step.source], dims)
    except (ValueError, KeyError) as error:
        raise UnsupportedError(path, f"array '{step.source}' {list(shapes[step.source])}: {error}") from None


def check_against_model(family: Family, wmap: WeightMap, config: dict[str, Any],
                        planned: dict[str, tuple[int, ...]], path: Any):
    """Build the transformers model on the meta device and compare every planned shape with its own;
    returns the transformers config object."""
    import torch
    import transformers

    from vlmkit.logs import quiet_transformers

    quiet_transformers()
    fields = {k: v for k, v in config.items() if k != "model_type"}
    model_config = transformers.AutoConfig.for_model(config["model_type"], **fields)
    with torch.device("meta"):
        model = getattr(transformers, family.hf_class)(model_config)
    expected = {family.disk_name(k): tuple(v.shape) for k, v in model.state_dict().items()}
    for name, shape in planned.items():
        if name not in expected:
            raise UnsupportedError(path, f"'{name}' is not a tensor of {family.hf_class} with this config")
        if tuple(shape) != expected[name]:
            raise UnsupportedError(path, f"tensor '{name}': the checkpoint gives {list(shape)}, "
                                         f"{family.hf_class} expects {list(expected[name])}")
    missing = [n for n in expected if n not in planned and not wmap.hf_unmapped_reason(n)
               and not family.is_buffer(n)]
    if missing:
        raise UnsupportedError(path, f"{len(missing)} tensor(s) of {family.hf_class} have no source: "
                                     + ", ".join(missing[:6]))
    return model_config


def _save_config(model_config, plan, out: Path) -> None:
    import transformers

    dtypes = {dtype for _, _, dtype in plan}
    model_config.dtype = "bfloat16" if dtypes == {"BF16"} else "float32" if dtypes == {"F32"} else None
    model_config.save_pretrained(str(out))
    transformers.GenerationConfig.from_model_config(model_config).save_pretrained(str(out))


def _forward_arrays(checkpoint: Checkpoint, steps, dims, progress: bool):
    from tqdm import tqdm

    for step in tqdm(steps, desc="big_vision -> hf", unit="array", disable=not progress, leave=False):
        yield from run_forward(step, checkpoint.read(step.source), dims)


# --- HF -> big_vision ----------------------------------------------------------------------------
def hf_to_big_vision(checkpoint: Checkpoint, config: dict[str, Any], out_file: Path, *,
                     layout: Layout | None = None, overwrite: bool = False, progress: bool = False) -> MapResult:
    """Write a big_vision ``.npz`` from an HF checkpoint; the layout defaults to the one recorded when
    the checkpoint came from big_vision, else scanned with bare keys."""
    start = time.perf_counter()
    family, _ = family_for(config, checkpoint.infos)
    wmap = weight_map_of(family, checkpoint.path)
    dims = wmap.dims(config)
    stored = {family.disk_name(name): name for name in checkpoint.infos}
    recorded = checkpoint.metadata.get(LAYOUT_KEY)
    layout = layout or (Layout.decode(recorded) if recorded else Layout())
    steps = wmap.plan_backward(dims, layout)
    used = {name for step in steps for name in step.targets}
    missing = sorted(used - stored.keys())
    if missing:
        raise UnsupportedError(checkpoint.path, f"{len(missing)} tensor(s) that big_vision needs are missing: "
                                                + ", ".join(missing[:6]))
    extra = [n for n in stored if n not in used and not wmap.hf_unmapped_reason(n) and not family.is_buffer(n)]
    require_known(extra, "big_vision", checkpoint.path)
    _require_tied(family, config, checkpoint, stored)
    read = checkpoint.read   # plain reads: a memory map would keep the whole model resident
    with atomic_file(Path(out_file), overwrite) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for step in _progress(steps, progress):
                array = run_backward(step, lambda n: read(stored[n]), dims)
                write_member(archive, step.source, array)
    return MapResult(str(out_file), "hf -> big_vision", family.name, len(stored), len(steps),
                     layout.describe(wmap.stacks), f"{checkpoint.path}/config.json",
                     seconds=time.perf_counter() - start)


def _progress(steps, progress: bool):
    from tqdm import tqdm

    return tqdm(steps, desc="hf -> big_vision", unit="array", disable=not progress, leave=False)


def _require_tied(family: Family, config: dict[str, Any], checkpoint: Checkpoint, stored: dict[str, str]) -> None:
    """big_vision decodes with the embedding table: an untied head that differs cannot be written."""
    for head, embedding in family.tied.items():
        if head in stored and embedding in stored and not family.ties_active(config):
            if not np.array_equal(checkpoint.read(stored[head]), checkpoint.read(stored[embedding])):
                raise UnsupportedError(checkpoint.path, f"'{head}' is not tied to '{embedding}' and differs from "
                                                        "it; big_vision has no separate output head")


def write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """One ``name.npy`` member as big_vision writes it: bfloat16 as a 2-byte void dtype."""
    if array.dtype.itemsize == 2 and array.dtype.kind == "V":
        array = array.view(np.dtype("V2"))
    with archive.open(name + ".npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
