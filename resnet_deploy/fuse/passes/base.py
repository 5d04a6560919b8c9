"""What a fusion pass is: a pattern (``match``), a ``check`` that declines with a reason, and a ``rewrite``."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from ...types import Target
from ...onnx_graph import Graph, name_scopes

log = logging.getLogger(__name__)

BOTH = frozenset({Target.PORTABLE, Target.ONNXRUNTIME})


@dataclass
class Rewrite:
    """One applied rewrite: the source nodes (name, op[, torch module]) and the node they became (None: removed)."""

    pass_name: str
    sources: list[tuple]
    result: tuple[str, str] | None
    scope: str = ""  # the torch module (e.g. ``layer1.0``) the nodes came from, when the exporter recorded it
    detail: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = [dict(zip(("name", "op", "module"), s)) for s in self.sources]
        d["result"] = {"name": self.result[0], "op": self.result[1]} if self.result else None
        return d


@dataclass
class Declined:
    pass_name: str
    nodes: list[str]
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PassResult:
    name: str
    rewrites: list[Rewrite] = field(default_factory=list)
    declined: list[Declined] = field(default_factory=list)
    found: list[Rewrite] = field(default_factory=list)  # patterns recognised and recorded, the graph unchanged


def common_scope(nodes) -> str:
    """The deepest torch module shared by ``nodes`` (``layer1.0``), or "" when unknown / top level."""
    scopes = [name_scopes(n)[:-1] for n in nodes]  # the last entry names the op itself
    if not scopes or not all(scopes):
        return ""
    common = []
    for parts in zip(*scopes):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return common[-1] if common else ""


class Pass:
    """Base of every pass. Subclasses set ``name``, ``summary``, ``targets`` and implement the three steps.

    ``match`` returns candidates (tuples of node names, first the anchor); ``check`` returns None to accept or
    the reason it declines; ``rewrite`` changes the graph and returns a ``Rewrite``.
    """

    name = "pass"
    summary = ""
    targets: frozenset = BOTH

    def match(self, g: Graph) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def check(self, g: Graph, m: tuple[str, ...]) -> str | None:
        return None

    def rewrite(self, g: Graph, m: tuple[str, ...]) -> Rewrite:
        raise NotImplementedError

    def run(self, g: Graph) -> PassResult:
        res = PassResult(self.name)
        for m in self.match(g):
            if not self.alive(g, m):  # an earlier rewrite of this pass consumed part of the match
                continue
            reason = self.check(g, m)
            if reason:
                res.declined.append(Declined(self.name, [n for n in m if n], reason))
                log.info("%s declined %s: %s", self.name, ", ".join(n for n in m if n), reason)
                continue
            res.rewrites.append(self.rewrite(g, m))
            g.refresh()
        if res.rewrites:
            g.toposort()
        return res

    def alive(self, g: Graph, m) -> bool:
        return all(name in g.nodes for name in m if name)

    def sources(self, g: Graph, m) -> list[tuple[str, str, str]]:
        """(name, op, torch module or "") of the matched nodes; call before the rewrite removes them."""
        out = []
        for name in m:
            scopes = name_scopes(g.nodes[name])
            out.append((name, g.nodes[name].op_type, scopes[-2] if len(scopes) >= 2 else ""))
        return out
