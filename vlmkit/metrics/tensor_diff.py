"""Tensor-difference statistics, pure numpy: what changed between two versions of one tensor.

Per tensor: ‖A‖, ‖A−B‖, the relative change ‖A−B‖/‖A‖, the largest absolute change and the cosine
of A and B. Sums are taken in float64 over row blocks, so comparing two tensors needs only a block of
float64 scratch beside them; roll-ups add squared norms, so a layer's relative change is
sqrt(Σ‖A−B‖²)/sqrt(Σ‖A‖²) over its tensors, not an average of ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

UNCHANGED, CHANGED, ADDED, REMOVED, RESHAPED, SKIPPED = "unchanged", "changed", "added", "removed", "reshaped", "skipped"
_BLOCK = 1 << 20   # elements per float64 block


@dataclass
class TensorStats:
    sq_a: float         # ‖A‖²
    sq_b: float         # ‖B‖²
    sq_diff: float      # ‖A−B‖²
    dot: float          # A·B
    max_abs: float      # max |A−B|

    @property
    def rel_change(self) -> float:
        return relative(self.sq_diff, self.sq_a)

    @property
    def cosine(self) -> float | None:
        denominator = math.sqrt(self.sq_a * self.sq_b)
        return self.dot / denominator if denominator else None


def relative(sq_diff: float, sq_a: float) -> float:
    if sq_a > 0:
        return math.sqrt(sq_diff / sq_a)
    return 0.0 if sq_diff == 0 else math.inf


def finite(value: float) -> float | None:
    """JSON has no infinity: a change from an all-zero tensor is reported as null."""
    return value if math.isfinite(value) else None


def tensor_stats(a: np.ndarray, b: np.ndarray) -> TensorStats:
    """Statistics of A and B (same shape), accumulated in float64 blocks."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    if a.dtype == b.dtype and np.array_equal(flat_a.view(np.uint8), flat_b.view(np.uint8)):  # same bytes
        sq = sum(_sq(flat_a[start:start + _BLOCK]) for start in range(0, flat_a.size, _BLOCK))
        return TensorStats(sq, sq, 0.0, sq, 0.0)
    sq_a = sq_b = sq_diff = dot = max_abs = 0.0
    for start in range(0, flat_a.size, _BLOCK):
        x = flat_a[start:start + _BLOCK].astype(np.float64)
        y = flat_b[start:start + _BLOCK].astype(np.float64)
        d = x - y
        sq_a += float(x @ x)
        sq_b += float(y @ y)
        sq_diff += float(d @ d)
        dot += float(x @ y)
        max_abs = max(max_abs, float(np.abs(d).max(initial=0.0)))
    return TensorStats(sq_a, sq_b, sq_diff, dot, max_abs)


def _sq(block: np.ndarray) -> float:
    x = block.astype(np.float64)
    return float(x @ x)


@dataclass
class TensorDiff:
    """One tensor's verdict (``status``) and, when compared, its statistics."""

    name: str
    status: str
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None
    stats: TensorStats | None = None
    note: str | None = None

    def as_dict(self) -> dict:
        out = {"name": self.name, "status": self.status, "shape_a": self.shape_a, "shape_b": self.shape_b}
        if self.stats is not None:
            out.update(rel_change=finite(self.stats.rel_change), max_abs=self.stats.max_abs, cosine=self.stats.cosine,
                       norm_a=math.sqrt(self.stats.sq_a), norm_diff=math.sqrt(self.stats.sq_diff))
        if self.note:
            out["note"] = self.note
        return out


def verdict(name: str, a: np.ndarray, b: np.ndarray, tolerance: float = 0.0) -> TensorDiff:
    """Compare two versions of a tensor: ``changed`` when the relative change exceeds ``tolerance``."""
    if a.shape != b.shape:
        return TensorDiff(name, RESHAPED, tuple(a.shape), tuple(b.shape))
    stats = tensor_stats(a, b)
    changed = stats.max_abs > 0 and stats.rel_change > tolerance
    return TensorDiff(name, CHANGED if changed else UNCHANGED, tuple(a.shape), tuple(b.shape), stats)


@dataclass
class Rollup:
    """Tensors grouped by layer, component or module kind: counts and pooled statistics."""

    key: str
    tensors: int = 0
    changed: int = 0
    sq_a: float = 0.0
    sq_diff: float = 0.0
    max_abs: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def add(self, diff: TensorDiff) -> None:
        self.tensors += 1
        self.statuses[diff.status] = self.statuses.get(diff.status, 0) + 1
        if diff.status != UNCHANGED:
            self.changed += 1
        if diff.stats is not None:
            self.sq_a += diff.stats.sq_a
            self.sq_diff += diff.stats.sq_diff
            self.max_abs = max(self.max_abs, diff.stats.max_abs)

    @property
    def rel_change(self) -> float:
        return relative(self.sq_diff, self.sq_a)

    def as_dict(self) -> dict:
        return {"key": self.key, "tensors": self.tensors, "changed": self.changed, "rel_change": finite(self.rel_change),
                "max_abs": self.max_abs, "statuses": self.statuses}
