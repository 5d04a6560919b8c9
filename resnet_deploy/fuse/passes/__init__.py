"""The fusion passes, one module each, registered by name in the order they run."""

from __future__ import annotations

from ...errors import unknown
from .base import Declined, Pass, PassResult, Rewrite
from .dedup_initializers import DedupInitializers
from .drop_broadcast_expand import DropBroadcastExpand
from .eliminate_identity import EliminateIdentity
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstants
from .fuse_conv_add import FuseConvAdd
from .fuse_conv_add_relu import FuseConvAddRelu
from .fuse_conv_relu import FuseConvRelu
from .fuse_conv_sigmoid import FuseConvSigmoid
from .reduce_mean_pool import ReduceMeanToPool
from .remove_dead_nodes import RemoveDeadNodes
from .squeeze_excitation import SqueezeExcitation

# Run order: clean up, fold BN, the residual fusion, recognise SE / ECA blocks (before their Convs fuse), the
# portable rewrites of their plumbing, the other runtime-specific fusions, then drop what they orphaned.
PASSES: dict[str, Pass] = {p.name: p for p in (
    EliminateIdentity(), FoldConstants(), DedupInitializers(), FoldBatchNorm(), FuseConvAddRelu(),
    SqueezeExcitation(), DropBroadcastExpand(), ReduceMeanToPool(), FuseConvAdd(), FuseConvRelu(), FuseConvSigmoid(),
    RemoveDeadNodes(),
)}


def pass_names() -> list[str]:
    return list(PASSES)


def get_pass(name: str) -> Pass:
    """Look a pass up by name, with a one-line error naming the valid choices."""
    try:
        return PASSES[name]
    except KeyError:
        raise unknown("pass", name, PASSES) from None


__all__ = ["PASSES", "Declined", "Pass", "PassResult", "Rewrite", "get_pass", "pass_names"]
