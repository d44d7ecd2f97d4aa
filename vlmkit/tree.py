"""Module tree with per-module parameter counts, like torchinfo's summary.

Built from config.json alone: transformers instantiates the model class on the meta device (no
memory, no weight read). Custom-code checkpoints (whose class we refuse to import) and GGUF / npz
files get the same tree built from their tensor names instead, and say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmkit.errors import UnsupportedError
from vlmkit.families import Family


@dataclass
class TreeNode:
    name: str
    kind: str                      # module class name, or "" for name-derived trees
    params: int = 0
    repeat: int = 1                # identical siblings folded into one node (``layers.{0..31}``)
    children: list["TreeNode"] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "params": self.params,
            "repeat": self.repeat,
            "children": [c.to_dict() for c in self.children],
        }


def meta_model(folder: Path, family: Family, config: dict[str, Any]):
    """Instantiate the transformers class on the meta device from the config alone."""
    import torch
    import transformers

    class_name = family.hf_class or next(iter(config.get("architectures") or []), None)
    model_class = getattr(transformers, class_name, None) if class_name else None
    if model_class is None or family.custom_code:
        raise UnsupportedError(folder, f"no transformers class for {class_name or 'this model'}")
    hf_config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with torch.device("meta"):
        return model_class._from_config(hf_config)


def tree_from_module(module, name: str = "") -> TreeNode:
    node = TreeNode(name or type(module).__name__, type(module).__name__)
    node.params = sum(p.numel() for p in module.parameters())
    children = [tree_from_module(child, child_name) for child_name, child in module.named_children()]
    node.children = _fold_repeats(children)
    return node


def tree_from_names(shapes: dict[str, int], root: str = "model") -> TreeNode:
    """Tree of dotted (or slash-separated) tensor names; leaves are the tensors."""
    top = TreeNode(root, "")
    for name, numel in shapes.items():
        node = top
        node.params += numel
        for part in re.split(r"[./]", name)[:-1]:
            child = next((c for c in node.children if c.name == part), None)
            if child is None:
                child = TreeNode(part, "")
                node.children.append(child)
            node = child
            node.params += numel
    _fold_all(top)
    return top


def _fold_all(node: TreeNode) -> None:
    for child in node.children:
        _fold_all(child)
    node.children = _fold_repeats(node.children)


def _signature(node: TreeNode) -> tuple:
    return (node.kind, node.params, node.repeat, tuple(_signature(c) for c in node.children))


def _fold_repeats(children: list[TreeNode]) -> list[TreeNode]:
    """Fold runs of consecutive numbered siblings with identical structure into one ``{a..b}`` node."""
    result: list[TreeNode] = []
    run: list[TreeNode] = []

    def flush() -> None:
        if len(run) > 1:
            first = run[0]
            merged = TreeNode(f"{{{run[0].name}..{run[-1].name}}}", first.kind, first.params, len(run), first.children)
            result.append(merged)
        else:
            result.extend(run)
        run.clear()

    for child in children:
        if child.name.isdigit() and run and int(child.name) == int(run[-1].name) + 1 \
                and _signature(child) == _signature(run[0]):
            run.append(child)
            continue
        flush()
        if child.name.isdigit():
            run.append(child)
        else:
            result.append(child)
    flush()
    return result


def model_tree(view: "ModelView") -> tuple[TreeNode, str]:  # noqa: F821
    """(tree, source): source is "config" (meta-device model) or "tensor names" (fallback)."""
    if (view.folder / "config.json").is_file():
        try:
            return tree_from_module(meta_model(view.folder, view.family, view.config)), "config"
        except (UnsupportedError, ValueError, KeyError):
            pass
    return tree_from_names({n: i.numel for n, i in view.params.items()}, view.family.name), "tensor names"
