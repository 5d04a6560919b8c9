"""Conv + BatchNorm folding at the PyTorch level, before export, found by data flow (torch.fx), not by module
names: a BN defined anywhere in the module tree folds into the Conv whose output it normalises."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class TorchFoldResult:
    """The folded copy of the model (the input is not changed) and what was folded or declined, by module name."""

    model: object
    folded: list[dict] = field(default_factory=list)  # {"conv": name, "bn": name}
    declined: list[dict] = field(default_factory=list)  # {"bn": name, "reason": text}
    traced: bool = True

    def to_dict(self) -> dict:
        return {"traced": self.traced, "folded": self.folded, "declined": self.declined}


def _decline_reason(node, modules: dict, gm) -> str | None:
    import torch
    from torch import fx

    bn = modules[node.target]
    if not bn.track_running_stats or bn.running_mean is None:
        return "it has no running statistics (track_running_stats=False)"
    src = node.args[0] if node.args else None
    if not isinstance(src, fx.Node) or src.op != "call_module" or \
            not isinstance(modules.get(src.target), (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        what = f"{src.op} {src.target}" if isinstance(src, fx.Node) else repr(src)
        return f"its input comes from {what}, not a Conv module"
    if len(src.users) > 1:
        return f"the output of Conv {src.target!r} has {len(src.users)} users"
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == src.target]
    if len(calls) > 1:
        return f"Conv {src.target!r} is called {len(calls)} times (shared weights)"
    return None


def fold_conv_bn(model) -> TorchFoldResult:
    """Fold every eval-mode BatchNorm that directly follows a Conv into that Conv; returns a traced copy.

    A model torch.fx cannot trace comes back unchanged (as an eval-mode copy) with ``traced=False``: the
    exporter's own fold and the ONNX ``fold-batchnorm`` pass still apply.
    """
    import torch
    from torch import fx
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds of errors on dynamic control flow
        log.warning("torch.fx cannot trace the model (%s): BatchNorm left to the exporter", type(e).__name__)
        return TorchFoldResult(model, traced=False,
                               declined=[{"bn": "*", "reason": f"model not traceable by torch.fx ({type(e).__name__})"}])
    res = TorchFoldResult(gm)
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), torch.nn.modules.batchnorm._BatchNorm):
            continue
        reason = _decline_reason(node, modules, gm)
        if reason:
            res.declined.append({"bn": node.target, "reason": reason})
            continue
        conv_node = node.args[0]
        fused = fuse_conv_bn_eval(modules[conv_node.target], modules[node.target])
        gm.set_submodule(conv_node.target, fused)
        modules[conv_node.target] = fused
        node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(node)
        res.folded.append({"conv": conv_node.target, "bn": node.target})
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    log.info("torch fold: %d Conv+BN folded, %d declined", len(res.folded), len(res.declined))
    return res
