"""The package's layout: ``members/`` (one member as a byte-level view) imports nothing of
``decoding/``, ``decoding/`` nothing of the Transformers face or ``tools/``, and no module
imports itself back through others (imports inside functions count too; those only for type
checkers do not)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chared_hf"
# Each layer, and the layers it may import.
ALLOWED = {"members": {"members"}, "decoding": {"members", "decoding"}}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not (isinstance(child, ast.If) and isinstance(child.test, ast.Name)
                    and child.test.id == "TYPE_CHECKING"):
                stack.append(child)


def _imports() -> dict[str, set[str]]:
    """Each module of the package (the demo aside) and the package modules it imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        if "demo" in path.parts:
            continue
        name, found = _module(path), set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else [])) if (
                    node.level) else node.module or ""
                for alias in node.names:
                    found.add(f"{target}.{alias.name}")
                found.add(target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = found
    modules = set(graph)
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}


def test_layers_import_only_the_layers_beneath_them():
    for module, targets in _imports().items():
        layer = module.split(".")[1] if module.count(".") > 1 else None
        if layer in ALLOWED:
            for target in targets:
                assert target.split(".")[1] in ALLOWED[layer], (module, target)


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, " -> ".join([*path, target])
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert len(graph) > 20
