"""The package's shape: family knowledge only in vlmkit/families/ (generic code never compares a
model_type or GGUF architecture name), checked on the source itself."""

from __future__ import annotations

import ast
from pathlib import Path

from vlmkit.families import all_families

PACKAGE = Path(__file__).resolve().parents[1] / "vlmkit"
# zoo/ builds replicas of named architectures and demo/ is one LLaVA: both are family-specific by purpose.
OUTSIDE_GENERIC = ("families", "zoo", "demo")


def family_names() -> set[str]:
    """Every model_type, family name, GGUF architecture and mmproj tower type the families declare
    ("gguf", the family of llama.cpp's own tensor names, is also the format's name: not counted)."""
    names: set[str] = set()
    for family in all_families():
        names |= {family.name, *family.model_types, *(family.mmproj.towers if family.mmproj else ())}
        names |= {family.gguf_arch} if family.gguf_arch else set()
    return names - {"gguf"}


def _literals(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Set, ast.Tuple, ast.List)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def name_tests(path: Path, names: set[str], root: Path = PACKAGE.parent) -> list[str]:
    """Comparisons (==, !=, in) against a family's name, and dicts keyed by family names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            hits = {v for operand in (node.left, *node.comparators) for v in _literals(operand)} & names
        elif isinstance(node, ast.Dict):
            hits = {v for key in node.keys if key is not None for v in _literals(key)} & names
        elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Set, ast.Tuple, ast.List)):
            hits = set(_literals(node.value)) & names
        else:
            continue
        if hits:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {sorted(hits)}")
    return found


def test_no_model_type_tests_outside_families() -> None:
    names = family_names()
    assert {"llava", "paligemma", "gptneox", "clip_vision_model"} <= names   # the check sees what it must
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             if path.relative_to(PACKAGE).parts[0] not in OUTSIDE_GENERIC for hit in name_tests(path, names)]
    assert not found, "family knowledge outside vlmkit/families/:\n" + "\n".join(found)


def test_the_check_finds_a_model_type_test(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('def f(config, arch):\n    return config["model_type"] == "llava" or arch in ("gptneox",)\n'
                      'PROMPT = {"paligemma"}\nHPARAMS = {"llama": 1}\n')
    assert len(name_tests(sample, family_names(), tmp_path)) == 4
