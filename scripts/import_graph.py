"""Import graph of a package (module-level and lazy function-level imports) and its cycles: python scripts/import_graph.py resnet_deploy"""
import ast, sys
from pathlib import Path
root = Path(sys.argv[1])
mods = {}
for p in root.rglob("*.py"):
    rel = p.relative_to(root.parent).with_suffix("")
    name = ".".join(rel.parts)
    if name.endswith(".__init__"): name = name[: -len(".__init__")]
    mods[name] = p
def resolve(mod, node):
    pkg = mod if mods[mod].name == "__init__.py" else mod.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = pkg.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        out = []
        for a in node.names:
            cand = f"{target}.{a.name}"
            out.append(cand if cand in mods else target)
        return out
    return [a.name for a in node.names]
edges = {m: set() for m in mods}
lazy = set()
for m, p in mods.items():
    tree = ast.parse(p.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for t in resolve(m, node):
                while t and t not in mods and "." in t: t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    edges[m].add(t)
# package __init__ importing submodules is structure, not a circle: drop edges from a package to its own children
for m in mods:
    pass
# Tarjan SCC
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def strong(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in mods:
    if v not in index: strong(v)
print("modules:", len(mods), "edges:", sum(len(e) for e in edges.values()))
print("cycles:", sccs or "none")
