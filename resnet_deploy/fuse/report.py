"""The fusion report: per residual block, which nodes became which fused node; op counts before and after."""

from __future__ import annotations

from .core import FuseResult

CLEANUP = ("eliminate-identity", "fold-constants", "dedup-initializers", "remove-dead-nodes")


def target_report(res: FuseResult) -> dict:
    """A JSON-ready report of one target's fusion."""
    order = {n.name: i for i, n in enumerate(res.model.graph.node)}
    blocks: dict[str, list] = {}
    rewrites = sorted(res.rewrites, key=lambda r: order.get(r.result[0], -1) if r.result else -1)
    for r in rewrites:
        if r.pass_name in CLEANUP:
            continue
        blocks.setdefault(r.scope or "(top level)", []).append(r.to_dict())
    return {
        "target": str(res.target),
        "passes": [{"name": p.name, "rewrites": len(p.rewrites), "declined": len(p.declined),
                    **({"recognized": len(p.found)} if p.found else {})} for p in res.passes],
        "skipped": res.skipped,
        "ops_before": res.ops_before,
        "ops_after": res.ops_after,
        "nodes_before": sum(res.ops_before.values()),
        "nodes_after": sum(res.ops_after.values()),
        "blocks": blocks,
        "cleanup": [r.to_dict() for r in res.rewrites if r.pass_name in CLEANUP],
        "recognized": [r.to_dict() for r in res.found],
        "declined": [d.to_dict() for p in res.passes for d in p.declined],
        "seconds": round(res.seconds, 3),
    }


def block_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(block, pass, source nodes, result) rows for a table."""
    rows = []
    for block, rewrites in report["blocks"].items():
        for r in rewrites:
            src = " + ".join(f"{s['op']}({s.get('module') or s['name']})" for s in r["sources"])
            dst = r["result"]["op"] if r["result"] else "removed"  # the fused node keeps the Conv's name
            rows.append((block, r["pass_name"], src, dst + (f" ({r['detail']})" if r["detail"] else "")))
    return rows


def op_rows(report: dict) -> list[tuple[str, int, int]]:
    """(op, before, after) for every op type present before or after."""
    ops = sorted(set(report["ops_before"]) | set(report["ops_after"]))
    return [(op, report["ops_before"].get(op, 0), report["ops_after"].get(op, 0)) for op in ops]

