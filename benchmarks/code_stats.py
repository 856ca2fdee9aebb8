"""Structure of the activemri package: its import graph, layers, module sizes, longest functions.

The import graph counts every ``import`` statement of a module, at module level or inside a
function (a function-level import is a dependency all the same, only a later one), and an
import of ``a.b.c`` also depends on the packages ``a.b`` and ``a`` whose ``__init__`` it runs
(except the importer's own ancestors, which are already running). ``tests/test_layers.py``
holds the package to what :func:`cycles` and :func:`upward_imports` report.

Usage::

    python benchmarks/code_stats.py [PACKAGE_DIR]     # default: ./activemri
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ops", ("activemri._version", "activemri._io", "activemri._config", "activemri._threads",
             "activemri._dist",
             "activemri.kspace", "activemri.metrics", "activemri.masks", "activemri.masks2d",
             "activemri.geometry")),
    ("data", ("activemri.data",)),
    ("recon", ("activemri.recon_models",)),
    ("env", ("activemri.envs",)),
    ("agents", ("activemri.agents",)),
    ("evaluation", ("activemri.evaluation",)),
    ("cli", ("activemri.cli", "activemri.bench", "activemri")),
)  # fmt: skip
"""Layers from the bottom up (Ops <- Data <- Recon <- Env <- Agents <- Evaluation <- CLI): a
module may import its own layer and those listed before it. A module belongs to the layer of
the longest prefix naming it; the package root (which only registers the env ids) is on top."""


@dataclass
class Module:
    """One module of the package.

    Attributes:
        name: Dotted name (``activemri.envs.core``; a package's ``__init__`` is its package).
        path: Its file.
        lines: Lines in the file.
        imports: Package modules it imports (resolved), with the line of each import.
        functions: ``(qualified name, lines)`` of every function and method.
    """

    name: str
    path: Path
    lines: int
    imports: dict[str, int] = field(default_factory=dict)
    functions: list[tuple[str, int]] = field(default_factory=list)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _functions(tree: ast.AST) -> Iterator[tuple[str, int]]:
    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, (child.end_lineno or child.lineno) - child.lineno + 1
                yield from visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")

    yield from visit(tree, "")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    for node in ast.iter_child_nodes(tree):
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield child
                yield from _runtime_nodes(child)
            continue
        yield from _runtime_nodes(node)


def _resolve(name: str, known: set[str]) -> str | None:
    """The most specific package module ``name`` refers to (``None`` outside the package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def parse_package(root: Path) -> dict[str, Module]:
    """Every module under ``root`` (a package folder) with its imports and functions."""
    paths = sorted(root.rglob("*.py"))
    known = {_module_name(p, root) for p in paths}
    modules: dict[str, Module] = {}
    for path in paths:
        name = _module_name(path, root)
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        module = Module(name, path, len(text.splitlines()), functions=list(_functions(tree)))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` imports the submodule when there is one.
                targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
            for target in targets:
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    module.imports.setdefault(resolved, node.lineno)
        modules[name] = module
    return modules


def edges(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Dependencies of each module, with the package ``__init__`` files each import runs."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        own = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
        for target in module.imports:
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                dep = ".".join(parts[:k])
                # An ancestor of the importer is already running; naming it is still an edge.
                if dep in modules and (dep == target or dep not in own):
                    graph[name].add(dep)
    return graph


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph = edges(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def layer_of(name: str) -> int:
    """Index of ``name``'s layer in :data:`LAYERS`."""
    best, best_len = len(LAYERS) - 1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def upward_imports(modules: dict[str, Module]) -> list[str]:
    """``"module:line imports target (layer a -> b)"`` for each import of a higher layer."""
    out = []
    for name, module in sorted(modules.items()):
        for target, line in sorted(module.imports.items()):
            if layer_of(target) > layer_of(name):
                out.append(
                    f"{name}:{line} imports {target} "
                    f"({LAYERS[layer_of(name)][0]} -> {LAYERS[layer_of(target)][0]})"
                )
    return out


def report(root: Path) -> str:
    """Sizes, longest functions, import fan-in/out, cycles and upward imports, as text."""
    modules = parse_package(root)
    graph = edges(modules)
    fan_in = {name: 0 for name in modules}
    for deps in graph.values():
        for dep in deps:
            fan_in[dep] += 1
    lines = [f"{len(modules)} modules, {sum(m.lines for m in modules.values())} lines"]
    lines.append("\nlargest modules (lines):")
    for m in sorted(modules.values(), key=lambda m: -m.lines)[:10]:
        lines.append(f"  {m.lines:5d}  {m.name}")
    lines.append("\nlongest functions (lines):")
    funcs = [(n, f"{m.name}.{f}") for m in modules.values() for f, n in m.functions]
    for n, f in sorted(funcs, reverse=True)[:10]:
        lines.append(f"  {n:5d}  {f}")
    lines.append("\nimport fan-out (package modules imported) / fan-in (importers):")
    for name in sorted(modules, key=lambda n: -len(graph[n]))[:8]:
        lines.append(f"  out {len(graph[name]):3d}  in {fan_in[name]:3d}  {name}")
    fan_outs = sorted(len(d) for d in graph.values())
    lines.append(f"  median fan-out {fan_outs[len(fan_outs) // 2]}, max {fan_outs[-1]}")
    found = cycles(modules)
    lines.append(f"\nimport cycles: {len(found)}")
    lines += [f"  {' <-> '.join(group)}" for group in found]
    upward = upward_imports(modules)
    lines.append(f"\nupward imports: {len(upward)}")
    lines += [f"  {u}" for u in upward]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1] if len(sys.argv) > 1 else "activemri").resolve()))
