"""Reversible weight maps: how another framework's tensors become Hugging Face tensors, as data.

A family declares a :class:`WeightMap` (``FAMILY.weight_maps["big_vision"]``): per tensor the foreign
name, the HF name(s) it becomes and a short list of reversible ops, in the spirit of transformers 5's
``WeightConverter(ops=[Chunk, Transpose ...])``. The same declaration runs forwards (foreign -> HF),
backwards (HF -> foreign), names tensors for ``inspect`` and pairs them for ``diff``. Nothing here
knows a model: sizes in ops are symbols (``"N*H,D"``) that the family's ``dims(config)`` hook fills in.

Why by hand: transformers' own ``WeightConverter`` needs a model instance and torch, runs one way per
load, and has no notion of a scanned (layer-stacked) JAX checkpoint; here the map is pure numpy and
streams tensor by tensor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmkit.errors import UnsupportedError

Shape = tuple[int, ...]
Dims = Mapping[str, Any]        # symbol -> size (int) or flag (bool), from the family's dims(config)


def _size(expr: str, dims: Dims) -> int:
    value = 1
    for symbol in expr.split("*"):
        symbol = symbol.strip()
        value *= int(symbol) if symbol.isdigit() else int(dims[symbol])
    return value


def _shape(spec: str, dims: Dims) -> Shape:
    return tuple(_size(part, dims) for part in spec.split(",")) if spec else ()


@dataclass(frozen=True)
class Transpose:
    """Permute axes (flax kernels are ``(in, out)``, torch weights ``(out, in)``)."""

    perm: tuple[int, ...] = (1, 0)

    def forward(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        return [a.transpose(self.perm) for a in arrays]

    def inverse(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        return [a.transpose(np.argsort(self.perm)) for a in arrays]

    def shapes(self, shapes: list[Shape], dims: Dims) -> list[Shape]:
        return [tuple(s[p] for p in self.perm) for s in shapes]


@dataclass(frozen=True)
class Reshape:
    """Merge or split axes, e.g. heads: ``Reshape("N,H,D", "N*H,D")``; sizes from the family's dims."""

    frm: str
    to: str

    def forward(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        return [a.reshape(_shape(self.to, dims)) for a in arrays]

    def inverse(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        return [a.reshape(_shape(self.frm, dims)) for a in arrays]

    def shapes(self, shapes: list[Shape], dims: Dims) -> list[Shape]:
        want = _shape(self.frm, dims)
        for shape in shapes:
            if tuple(shape) != want:
                raise ValueError(f"shape {list(shape)} where the config gives {list(want)} ({self.frm})")
        return [_shape(self.to, dims) for _ in shapes]


@dataclass(frozen=True)
class Unstack:
    """One tensor holding several along ``axis`` (``kv_einsum``: k, v) -> that many tensors; back: stack."""

    axis: int = 0

    def forward(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        (array,) = arrays
        return [np.take(array, i, axis=self.axis) for i in range(array.shape[self.axis])]

    def inverse(self, arrays: list[np.ndarray], dims: Dims) -> list[np.ndarray]:
        return [np.stack(arrays, axis=self.axis)]

    def shapes(self, shapes: list[Shape], dims: Dims) -> list[Shape]:
        (shape,) = shapes
        return [shape[: self.axis] + shape[self.axis + 1:]] * shape[self.axis]


Op = Transpose | Reshape | Unstack


@dataclass(frozen=True)
class Rule:
    """One foreign tensor and the HF tensor(s) it becomes; ``ops`` run in order forwards, reversed back.

    ``only_if`` names a boolean in dims (``"!flag"`` for its negation): the rule applies only to models
    with (without) that feature, e.g. a fused ``qkv_einsum`` when query and key/value heads are equal.
    """

    source: str
    targets: tuple[str, ...]
    ops: tuple[Op, ...] = ()
    only_if: str | None = None

    def applies(self, dims: Dims) -> bool:
        if self.only_if is None:
            return True
        negate = self.only_if.startswith("!")
        return bool(dims.get(self.only_if.lstrip("!"))) != negate


@dataclass(frozen=True)
class LayerStack:
    """Repeated blocks: stored stacked (scanned: a leading layer axis on every tensor under ``stacked``)
    or one sub-tree per layer (``unstacked`` templates with ``{i}``; the first is what gets written)."""

    stacked: str
    unstacked: tuple[str, ...]
    hf: str                      # HF prefix with {i}
    count: str                   # dims symbol holding the number of layers
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Layout:
    """How a foreign checkpoint spells its names: an optional prefix (``params/``) and, per layer
    stack, scanned (-1) or the index of the unstacked spelling it used."""

    prefix: str = ""
    spellings: tuple[int, ...] = ()        # missing entries: scanned

    def spelling(self, stack_index: int) -> int:
        return self.spellings[stack_index] if stack_index < len(self.spellings) else SCANNED

    def encode(self) -> str:
        return f"{self.prefix}|{','.join(map(str, self.spellings))}"

    @classmethod
    def decode(cls, text: str) -> Layout:
        prefix, spellings = text.rsplit("|", 1)
        return cls(prefix, tuple(int(t) for t in spellings.split(",") if t))

    def describe(self, stacks: tuple[LayerStack, ...]) -> str:
        parts = [f"{s.stacked.rstrip('/')}: " + ("scanned" if self.spelling(i) == SCANNED
                                                 else s.unstacked[self.spelling(i)].rstrip("/"))
                 for i, s in enumerate(stacks)]
        return (f"prefix '{self.prefix}', " if self.prefix else "") + ", ".join(parts)


SCANNED = -1


@dataclass(frozen=True)
class Step:
    """One foreign tensor (stacked or a single layer's) and the HF tensors it turns into, in order."""

    rule: Rule
    source: str                   # the foreign name as stored
    layers: tuple[int, ...] | None  # the layer indices it holds (None: not in a layer stack)
    stacked: bool
    targets: tuple[str, ...]      # layer-major: layer 0's targets, then layer 1's ...

    def target_groups(self) -> list[tuple[int | None, tuple[str, ...]]]:
        """(layer, that layer's HF names) in order."""
        n = len(self.rule.targets)
        layers: Iterable[int | None] = self.layers if self.layers is not None else (None,)
        return [(layer, self.targets[k * n:(k + 1) * n]) for k, layer in enumerate(layers)]


@dataclass(frozen=True)
class WeightMap:
    """A foreign format's tensors as HF tensors, both ways. Hooks come from the family file."""

    format: str                                   # "big_vision"
    rules: tuple[Rule, ...]                       # tensors outside any layer stack
    stacks: tuple[LayerStack, ...]
    dims: Callable[[dict[str, Any]], dict[str, Any]]            # HF config -> symbols and flags
    # (folded shapes, layer counts) from ``folded_shapes`` -> an HF config
    config_from_shapes: Callable[[dict[str, Shape], dict[str, int]], dict[str, Any]] | None = None
    prefixes: tuple[str, ...] = ()                # optional leading path segments (``params/``)
    presets: Callable[[str], dict[str, Any] | None] | None = None  # ``--config NAME`` -> fields it fixes
    preset_names: tuple[str, ...] = ()
    # (tokenizer file, HF config, output dir) -> the image token id; writes the processor files
    write_processor: Callable[[Any, dict[str, Any], Any], int] | None = None
    tokenizer_files: tuple[str, ...] = ("tokenizer.model",)   # globs looked up beside a checkpoint
    hf_unmapped: dict[str, str] = field(default_factory=dict)   # HF regex -> why it has no foreign tensor

    # --- foreign -> HF --------------------------------------------------------------------------
    def layout_of(self, names: Iterable[str]) -> Layout:
        names = list(names)
        prefix = next((p for p in self.prefixes if names and all(n.startswith(p) for n in names)), "")
        bare = [n[len(prefix):] for n in names]
        return Layout(prefix, tuple(_spelling(stack, bare) for stack in self.stacks))

    def folded_shapes(self, shapes: Mapping[str, Shape]) -> tuple[dict[str, Shape], dict[str, int]]:
        """Shapes named without prefix, every layer-stack tensor once under its stacked spelling with
        its per-layer shape, and each stack's layer count: what ``config_from_shapes`` reads."""
        layout = self.layout_of(shapes)
        folded: dict[str, Shape] = {}
        counts: dict[str, int] = {}
        for name, shape in shapes.items():
            bare = name[len(layout.prefix):]
            for index, stack in enumerate(self.stacks):
                spelling = layout.spelling(index)
                if spelling == SCANNED and bare.startswith(stack.stacked):
                    folded[bare] = tuple(shape[1:])
                    counts[stack.count] = int(shape[0])
                    break
                found = _template_regex(stack.unstacked[spelling]).match(bare) if spelling != SCANNED else None
                if found:
                    folded[stack.stacked + bare[found.end():]] = tuple(shape)
                    counts[stack.count] = max(counts.get(stack.count, 0), int(found.group(1)) + 1)
                    break
            else:
                folded[bare] = tuple(shape)
        return folded, counts

    def plan_forward(self, shapes: Mapping[str, Shape], dims: Dims) -> tuple[list[Step], list[str]]:
        """Steps for every foreign tensor this map knows, and the names it does not know."""
        steps, unknown = [], []
        layout = self.layout_of(shapes)
        for name, shape in shapes.items():
            step = self.match(name[len(layout.prefix):], shape, dims, stored=name)
            if step is None:
                unknown.append(name)
            else:
                steps.append(step)
        return steps, unknown

    def match(self, bare: str, shape: Shape, dims: Dims, stored: str | None = None) -> Step | None:
        """The step for one foreign tensor, named without its prefix; None when no rule covers it."""
        stored = stored or bare
        for rule in self.rules:
            if rule.source == bare and rule.applies(dims):
                return Step(rule, stored, None, False, rule.targets)
        for stack in self.stacks:
            found = _match_stack(stack, bare, shape, dims)
            if found is not None:
                rule, layers, stacked = found
                targets = tuple(stack.hf.format(i=i) + t for i in layers for t in rule.targets)
                return Step(rule, stored, layers, stacked, targets)
        return None

    def hf_names(self, bare: str, shape: Shape, dims: Dims) -> tuple[str, ...]:
        step = self.match(bare, shape, dims)
        return step.targets if step else ()

    # --- HF -> foreign --------------------------------------------------------------------------
    def plan_backward(self, dims: Dims, layout: Layout) -> list[Step]:
        """What to build from an HF checkpoint, in declaration order."""
        steps = [Step(r, layout.prefix + r.source, None, False, r.targets) for r in self.rules if r.applies(dims)]
        for index, stack in enumerate(self.stacks):
            n = int(dims[stack.count])
            for rule in (r for r in stack.rules if r.applies(dims)):
                if layout.spelling(index) == SCANNED:
                    targets = tuple(stack.hf.format(i=i) + t for i in range(n) for t in rule.targets)
                    steps.append(Step(rule, layout.prefix + stack.stacked + rule.source, tuple(range(n)), True,
                                      targets))
                    continue
                template = stack.unstacked[layout.spelling(index)]
                for i in range(n):
                    steps.append(Step(rule, layout.prefix + template.format(i=i) + rule.source, (i,), False,
                                      tuple(stack.hf.format(i=i) + t for t in rule.targets)))
        return steps

    def hf_unmapped_reason(self, hf_name: str) -> str | None:
        return next((why for pattern, why in self.hf_unmapped.items() if re.search(pattern, hf_name)), None)


def _spelling(stack: LayerStack, bare: list[str]) -> int:
    """Which unstacked spelling of ``stack`` the names use; SCANNED when none."""
    for index, template in enumerate(stack.unstacked):
        pattern = _template_regex(template)
        if any(pattern.match(n) for n in bare):
            return index
    return SCANNED


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(\d+)"))


def _match_stack(stack: LayerStack, bare: str, shape: Shape, dims: Dims):
    if bare.startswith(stack.stacked) and shape:   # ``llm/layers/`` also starts ``llm/layers/0/``: fall through
        rule = _rule_for(stack, bare[len(stack.stacked):], dims)
        if rule is not None:
            return rule, tuple(range(shape[0])), True
    for template in stack.unstacked:
        found = _template_regex(template).match(bare)
        if found:
            rule = _rule_for(stack, bare[found.end():], dims)
            return None if rule is None else (rule, (int(found.group(1)),), False)
    return None


def _rule_for(stack: LayerStack, rest: str, dims: Dims) -> Rule | None:
    return next((r for r in stack.rules if r.source == rest and r.applies(dims)), None)


# --- running ops ---------------------------------------------------------------------------------
def run_forward(step: Step, array: np.ndarray, dims: Dims) -> Iterable[tuple[str, np.ndarray]]:
    """(HF name, array) for each target of ``step`` from its foreign array (layer by layer)."""
    per_layer = [array[k] for k in range(array.shape[0])] if step.stacked else [array]
    for (_, names), piece in zip(step.target_groups(), per_layer, strict=True):
        arrays = [piece]
        for op in step.rule.ops:
            arrays = op.forward(arrays, dims)
        yield from zip(names, arrays, strict=True)


def run_backward(step: Step, load: Callable[[str], np.ndarray], dims: Dims) -> np.ndarray:
    """The foreign array of ``step`` built from its HF tensors (``load(name)``)."""
    pieces = []
    for _, names in step.target_groups():
        arrays = [load(n) for n in names]
        for op in reversed(step.rule.ops):
            arrays = op.inverse(arrays, dims)
        (piece,) = arrays
        pieces.append(np.ascontiguousarray(piece))
    return np.stack(pieces) if step.stacked else pieces[0]


def forward_shapes(step: Step, shape: Shape, dims: Dims) -> list[tuple[str, Shape]]:
    """The HF shapes ``step`` will write, without reading data; ValueError when the config disagrees."""
    per_layer = shape[1:] if step.stacked else shape
    out = []
    for _, names in step.target_groups():
        shapes = [tuple(per_layer)]
        for op in step.rule.ops:
            shapes = op.shapes(shapes, dims)
        if len(shapes) != len(names):
            raise ValueError(f"holds {len(shapes)} tensor(s), the map expects {len(names)}")
        out.extend(zip(names, shapes))
    return out


def require_known(unknown: list[str], what: str, path: Any) -> None:
    if unknown:
        shown = ", ".join(unknown[:6]) + (f" ... (+{len(unknown) - 6})" if len(unknown) > 6 else "")
        raise UnsupportedError(path, f"{len(unknown)} tensor(s) have no {what} mapping: {shown}")


def foreign_map(family: Any, names: Iterable[str]) -> WeightMap | None:
    """The family's weight map whose rules cover these tensor names (a foreign checkpoint), else None."""
    names = list(names)
    for wmap in getattr(family, "weight_maps", {}).values():
        layout = wmap.layout_of(names)
        sources = {r.source for r in wmap.rules}
        if names and sum(n[len(layout.prefix):] in sources for n in names) >= min(2, len(sources)):
            return wmap
    return None


def hf_names_for(wmap: WeightMap, shapes: Mapping[str, Shape]) -> dict[str, tuple[str, ...]]:
    """Foreign tensor -> the HF tensors it becomes, with the config its shapes imply (names only)."""
    if wmap.config_from_shapes is None:
        return {}
    dims = wmap.dims(wmap.config_from_shapes(*wmap.folded_shapes(shapes)))
    layout = wmap.layout_of(shapes)
    return {name: wmap.hf_names(name[len(layout.prefix):], shape, dims) for name, shape in shapes.items()}
