"""The layers of docs/architecture.md, checked on the code's own imports (function-local ones included).

Run it as a script to see the structure: ``python tests/test_architecture.py`` prints which package imports
which, layer by layer, the rooms of ``pipeline`` and any import cycle.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

LAYERS = ("sinet_plus", "sinet", "pipeline", "review_app")
"""The installed packages, lowest first: each may import its own modules and those of the packages below it."""

PIPELINE_ROOMS = {"crop": set(), "teacher": set(), "formats": set(), "review": {"formats"}, "run": {"review"}}
"""The features of ``pipeline`` and which other features the core of each may import; the shared modules
(``pipeline.faces``, ``pipeline.ray_engine``, ``pipeline.importers``, ...) are open to all. The command shells
(``pipeline/*/commands.py``) sit above the cores and may reach across; ``pipeline.cli`` wires them together."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> dict[str, set[str]]:
    """Every project module of the installed packages and the project modules it imports."""
    modules = {module_name(p): p for package in LAYERS for p in (PROJECT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {target for target in targets if target in modules}
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package(module: str) -> str:
    return module.split(".")[0]


def room(module: str) -> str | None:
    """The feature of ``pipeline`` a module belongs to (``crop``, ``teacher``, ``review``, ``run``), or None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "pipeline" and parts[1] in PIPELINE_ROOMS else None


def test_no_import_cycle():
    assert cycles(project_imports()) == []


def test_every_package_imports_only_itself_and_the_layers_below():
    upward = [f"{source} -> {target}" for source, targets in project_imports().items() for target in targets
              if LAYERS.index(package(target)) > LAYERS.index(package(source))]
    assert upward == []


def is_shell(module: str) -> bool:
    """A program or a command shell: ``pipeline.cli``, ``sinet.cli``, ``pipeline.<feature>.commands``."""
    return module in ("pipeline.cli", "sinet.cli") or module.endswith(".commands")


def test_pipeline_features_stay_in_their_rooms():
    sideways = [f"{source} -> {target}" for source, targets in project_imports().items()
                if room(source) and not is_shell(source)
                for target in targets if room(target) not in (None, room(source), *PIPELINE_ROOMS[room(source)])]
    assert sideways == []


def test_only_shells_import_shells():
    """The programs build themselves from the command shells; no core imports a shell, nothing imports a program."""
    inward = [f"{source} -> {target}" for source, targets in project_imports().items() for target in targets
              if is_shell(target) and (not is_shell(source) or target in ("pipeline.cli", "sinet.cli"))]
    assert inward == []


def main() -> None:
    graph = project_imports()
    edges: dict[str, set[str]] = defaultdict(set)
    rooms: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        for target in targets:
            if package(target) != package(source):
                edges[package(source)].add(package(target))
            elif package(source) == "pipeline" and room(source) and room(source) != room(target):
                rooms[room(source)].add(room(target) or target)
    for level, name in enumerate(LAYERS):
        count = sum(1 for module in graph if package(module) == name)
        print(f"layer {level}  {name:<11} {count:>3} modules  imports: {', '.join(sorted(edges[name])) or '-'}")
    print("pipeline rooms (besides their own modules): " + "; ".join(
        f"{name} -> {', '.join(sorted(rooms[name])) or '-'}" for name in PIPELINE_ROOMS))
    found = cycles(graph)
    print("import cycles: " + ("; ".join(" <-> ".join(c) for c in found) if found else "none"))


if __name__ == "__main__":
    main()
