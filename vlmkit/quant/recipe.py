"""What to quantize and how: typed settings, and the per-Linear decision read from the family declaration.

By default every ``nn.Linear`` inside the language model's decoder blocks is quantized; the vision tower,
projector, embeddings, final norm and head stay at source precision. ``include`` / ``exclude`` regexes (on
the module name as transformers 5 builds it) override the default; every kept module gets a stated reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vlmkit.errors import VlmkitError

METHODS = ("rtn", "awq", "gptq")
BITS = (4, 8)
CHANNEL = 0  # group_size value meaning one scale per output row


@dataclass(frozen=True)
class QuantSpec:
    """The quantization grid and the algorithm that chooses values on it."""

    method: str = "gptq"
    bits: int = 4
    group_size: int = 128          # CHANNEL (0) = per-output-channel scales
    symmetric: bool = True
    act_order: bool = False        # GPTQ: columns in decreasing Hessian-diagonal order (static groups)
    damp: float = 0.01             # GPTQ: dampening, fraction of the mean Hessian diagonal
    scale_search: bool = True      # GPTQ: each group's range shrunk (1 … 0.8) to its lowest rounding error
    awq_clip: bool = False         # AWQ: AutoAWQ's clipping search after the scales (llm-compressor has none)
    scale_grid: str | None = None  # round scales to this float type first ("float16": GGUF Q4_0 / Q8_0)
    include: tuple[str, ...] = ()  # regexes: also quantize these Linears (outside the decoder blocks too)
    exclude: tuple[str, ...] = ()  # regexes: keep these Linears at source precision

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise VlmkitError(None, f"--method {self.method}: choose one of {', '.join(METHODS)}")
        if self.bits not in BITS:
            raise VlmkitError(None, f"--bits {self.bits}: choose 4 or 8")
        if self.group_size < 0 or (self.group_size and self.group_size % 8):
            raise VlmkitError(None, f"--group-size {self.group_size}: use 0 (per channel) or a multiple of 8")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as error:
                raise VlmkitError(None, f"bad regex {pattern!r}: {error}") from None

    @property
    def scheme(self) -> str:
        return f"W{self.bits}A16"

    def group_for(self, in_features: int) -> int:
        """The group size used for a Linear of this width: the stated fallback for a width the group
        size does not divide (SigLIP-so400m's 4304 at 128) is one scale per output channel."""
        if self.group_size and in_features % self.group_size == 0:
            return self.group_size
        return CHANNEL


@dataclass
class Decision:
    name: str                 # module name as transformers 5 builds it
    quantize: bool
    reason: str
    group_size: int = CHANNEL


@dataclass
class Recipe:
    """Every Linear of the model with the decision taken for it."""

    decisions: dict[str, Decision] = field(default_factory=dict)

    @property
    def quantized(self) -> dict[str, str]:
        return {n: d.reason for n, d in self.decisions.items() if d.quantize}

    @property
    def kept(self) -> dict[str, str]:
        return {n: d.reason for n, d in self.decisions.items() if not d.quantize}


def decide(name: str, in_features: int, in_blocks: bool, component: str, spec: QuantSpec) -> Decision:
    """One Linear: quantized when it is in a decoder block (or named by --include) and not --exclude'd."""
    if any(re.search(p, name) for p in spec.exclude):
        return Decision(name, False, "--exclude")
    included = any(re.search(p, name) for p in spec.include)
    if not in_blocks and not included:
        return Decision(name, False, f"{component.replace('_', ' ')} kept at source precision (default)")
    if included and not in_blocks:
        return Decision(name, False, "--include outside the decoder blocks is not supported yet")
    group = spec.group_for(in_features)
    reason = "decoder-block Linear" if group == spec.group_size else (
        f"decoder-block Linear; width {in_features} not divisible by group size {spec.group_size}: "
        "per-channel scales (fallback)")
    return Decision(name, True, reason, group)
