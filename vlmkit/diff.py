"""``diff_checkpoints(a, b)``: what changed between two checkpoints, per tensor, layer, component and
module kind, across formats.

Both sides are read as HF-named tensors (``vlmkit.diff_sides``); the pairs stream one at a time (about
two tensors in memory); statistics come from ``vlmkit.metrics.tensor_diff``. A fine-tune's footprint is
the set of (component, layer) cells whose tensors changed, shown as a layer × module-kind heatmap by
``vlmkit.diff_report``.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.diff_sides import Side, open_side
from vlmkit.metrics.tensor_diff import (
    ADDED,
    CHANGED,
    REMOVED,
    SKIPPED,
    UNCHANGED,
    Rollup,
    TensorDiff,
    verdict,
)

# HF tensor name -> module kind, first match wins (one table for every family's HF names)
MODULE_KINDS: tuple[tuple[str, str], ...] = (
    (r"\.(q_proj|query)\.", "q"),
    (r"\.(k_proj|key)\.", "k"),
    (r"\.(v_proj|value)\.", "v"),
    (r"\.(o_proj|out_proj)\.|\.attention\.dense\.|\.attention\.output\.dense\.", "o"),
    (r"\.(qkv_proj|query_key_value|c_attn|Wqkv)\.", "qkv"),
    (r"\.(mlp|feed_forward|ffn)\.|\.(fc1|fc2|gate_proj|up_proj|down_proj|dense_h_to_4h|dense_4h_to_h)\.", "mlp"),
    (r"norm|\.ln_|layernorm", "norm"),
    (r"embed|wte\.|wpe\.", "embedding"),
    (r"lm_head|\.output\.|^output\.", "head"),
    (r"multi_modal_projector|mm_projector", "projector"),
)
KIND_ORDER = ("q", "k", "v", "o", "qkv", "mlp", "norm", "embedding", "projector", "head", "other")
_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


def module_kind(name: str) -> str:
    return next((kind for pattern, kind in MODULE_KINDS if re.search(pattern, name)), "other")


def layer_of(name: str) -> int | None:
    found = _LAYER.search(name)
    return int(found.group(1)) if found else None


@dataclass
class DiffReport:
    a: str
    b: str
    kinds: tuple[str, str]
    tolerance: float
    tensors: list[TensorDiff] = field(default_factory=list)
    components: dict[str, Rollup] = field(default_factory=dict)
    modules: dict[str, Rollup] = field(default_factory=dict)
    layers: dict[str, dict[int, Rollup]] = field(default_factory=dict)     # component -> layer -> rollup
    cells: dict[str, dict[tuple[int, str], Rollup]] = field(default_factory=dict)  # component -> (layer, kind)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for diff in self.tensors:
            out[diff.status] += 1
        return dict(out)

    def changed_layers(self) -> dict[str, list[int]]:
        """Per component, the layers with at least one tensor that is not unchanged (nor skipped)."""
        return {component: sorted(layer for layer, r in by_layer.items() if r.changed - r.statuses.get(SKIPPED, 0))
                for component, by_layer in self.layers.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "kinds": list(self.kinds), "tolerance": self.tolerance,
            "counts": self.counts(), "changed_layers": self.changed_layers(),
            "components": [r.as_dict() for r in self.components.values()],
            "modules": [r.as_dict() for r in self.modules.values()],
            "layers": {c: [r.as_dict() for _, r in sorted(by.items())] for c, by in self.layers.items()},
            "tensors": [d.as_dict() for d in self.tensors], "notes": self.notes, "seconds": round(self.seconds, 3),
        }


def diff_checkpoints(a: str | Path, b: str | Path, *, tolerance: float = 0.0, progress: bool = False,
                     download: bool = False) -> DiffReport:
    """Compare checkpoint ``b`` with ``a`` (HF folder, big_vision npz, GGUF, or a LoRA adapter folder
    of ``a``). ``tolerance``: a relative change at or below it counts as unchanged; ``download``: fetch
    hub ids missing from the local cache."""
    start = time.perf_counter()
    left = open_side(a, download=download)
    try:
        right = open_side(b, other=left, download=download)
    except BaseException:
        left.close()
        raise
    try:
        report = DiffReport(left.label, right.label, (left.kind, right.kind), tolerance)
        report.notes = left.notes + right.notes
        for diff in _pairs(left, right, tolerance, progress):
            _add(report, left, diff)
    finally:
        left.close()
        right.close()
    report.seconds = time.perf_counter() - start
    return report


def _pairs(left: Side, right: Side, tolerance: float, progress: bool):
    from tqdm import tqdm

    # walk the side that reads whole stacked arrays (big_vision) in its own order: its cache then holds
    names = list(right.shapes) if right.kind != "hf" and left.kind == "hf" else list(left.shapes)
    names += [n for n in left.shapes if n not in right.shapes and n not in set(names)]
    names += [n for n in right.shapes if n not in left.shapes and n not in set(names)]
    for name in tqdm(names, desc="diff", unit="tensor", disable=not progress, leave=False):
        if name in left.shapes and name in right.shapes:
            yield verdict(name, left.load(name), right.load(name), tolerance)
        elif name in left.shapes and name in right.skipped:
            yield TensorDiff(name, SKIPPED, left.shapes[name], None, note=right.skipped[name])
        elif name in left.shapes:
            yield TensorDiff(name, REMOVED, left.shapes[name], None)
        else:
            yield TensorDiff(name, ADDED, None, right.shapes[name])


def _add(report: DiffReport, left: Side, diff: TensorDiff) -> None:
    report.tensors.append(diff)
    component = left.family.component_of(diff.name)
    kind = module_kind(diff.name)
    report.components.setdefault(component, Rollup(component)).add(diff)
    report.modules.setdefault(kind, Rollup(kind)).add(diff)
    layer = layer_of(diff.name)
    if layer is not None:
        report.layers.setdefault(component, {}).setdefault(layer, Rollup(f"{component}.{layer}")).add(diff)
        cell = report.cells.setdefault(component, {})
        cell.setdefault((layer, kind), Rollup(f"{component}.{layer}.{kind}")).add(diff)


__all__ = ["ADDED", "CHANGED", "REMOVED", "SKIPPED", "UNCHANGED", "DiffReport", "diff_checkpoints"]
