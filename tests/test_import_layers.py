"""The package's import graph: llama.cpp behind vlmkit.llamacpp, exporter and runtime apart, no circles.

Every ``import`` statement is read from the source (module level and inside functions alike: a lazy import
is still a dependency), resolved to vlmkit modules, and checked."""

from __future__ import annotations

import ast
from pathlib import Path

import vlmkit

ROOT = Path(vlmkit.__file__).parent
EXPORTER, RUNTIME, LLAMACPP, EVAL = "vlmkit.gguf", "vlmkit.runtime", "vlmkit.llamacpp", "vlmkit.eval"


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["vlmkit", *path.relative_to(ROOT).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, name: str) -> set[str]:
    """Every module name ``path`` imports (absolute; relative imports resolved against ``name``);
    ``from package import module`` counts as importing the module, not the package's ``__init__``."""
    known, found = modules(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(base)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only, never executed)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None) if isinstance(child, ast.If) else None
            if test is not None and "TYPE_CHECKING" in ast.unparse(test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(path, name) if m in mods and m != name} for name, path in mods.items()}


def test_only_vlmkit_llamacpp_imports_llama_cpp():
    mods = modules()
    offenders = sorted(name for name, path in mods.items() if not within(name, LLAMACPP)
                       and any(m == "llama_cpp" or m.startswith("llama_cpp.") for m in imports(path, name)))
    assert offenders == []


def test_runtime_and_exporter_do_not_import_each_other():
    edges = [(a, b) for a, targets in graph().items() for b in targets
             if (within(a, RUNTIME) and within(b, EXPORTER)) or (within(a, EXPORTER) and within(b, RUNTIME))]
    assert edges == []


def test_llamacpp_package_imports_neither_runtime_nor_exporter():
    edges = [(a, b) for a, targets in graph().items() if within(a, LLAMACPP)
             for b in targets if within(b, RUNTIME, EXPORTER, EVAL)]
    assert edges == []


def test_no_import_cycles():
    g = graph()
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(g[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its submodules is not a cycle of behaviour: drop parent -> child edges
    real = [c for c in cycles if not all(b.startswith(a + ".") or a.startswith(b + ".") for a, b in zip(c, c[1:]))]
    assert real == []


def test_the_walker_sees_lazy_and_relative_imports():
    source = ROOT / "runtime" / "llamacpp_backend.py"
    found = imports(source, "vlmkit.runtime.llamacpp_backend")
    assert "vlmkit.llamacpp.loading" in found and "vlmkit.runtime.base" in found
