"""Import graph of a package and its circles, at file and at package level.

    python scripts/import_graph.py resnet_deploy [--edges]

Every import counts, module-level and lazy (inside functions) alike. A file-level circle is two modules that import
each other through any chain. A package-level circle is two units (a subpackage, or a module at the root) whose
files import each other through any chain. ``--edges`` also prints which unit imports which.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``root`` (a package's __init__ is the package)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (``from . import x`` resolves to module x when it is one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    root = next(iter(mods)).split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        for t in candidates:
            if not (t == root or t.startswith(root + ".")):
                continue
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t != name:
                found.add(t)
    return found


def unit(name: str) -> str:
    """The package-level unit of a module: its top subpackage, or the root module itself (``__init__`` for the
    package's own __init__)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module edges, unit edges)."""
    mods = modules(root)
    edges = {m: imports(m, p, mods) for m, p in mods.items()}
    units: dict[str, set[str]] = {}
    for m, targets in edges.items():
        a = unit(m)
        units.setdefault(a, set())
        for t in targets:
            b = unit(t)
            if a != b:
                units[a].add(b)
    return edges, units


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    edges, units = graph(root)
    print("modules:", len(edges), "edges:", sum(len(e) for e in edges.values()))
    print("cycles:", cycles(edges) or "none")
    print("package cycles:", cycles(units) or "none")
    if "--edges" in argv:
        for a in sorted(units):
            print(f"{a} -> {', '.join(sorted(units[a]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
