"""The one registry of supported architectures; CLI choices come from here and cannot drift.

Two families: the torchvision ResNets below (always there), and timm's ResNet family as ``timm/<name>`` when the
optional timm extra is installed (``timm_models`` says which names and why).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import timm_models
from .errors import UserError, choices, unknown


@dataclass(frozen=True)
class ArchSpec:
    name: str
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64


_SPECS = [
    ArchSpec("resnet18", "basic", (2, 2, 2, 2)),
    ArchSpec("resnet34", "basic", (3, 4, 6, 3)),
    ArchSpec("resnet50", "bottleneck", (3, 4, 6, 3)),
    ArchSpec("resnet101", "bottleneck", (3, 4, 23, 3)),
    ArchSpec("resnet152", "bottleneck", (3, 8, 36, 3)),
    ArchSpec("resnext50_32x4d", "bottleneck", (3, 4, 6, 3), 32, 4),
    ArchSpec("resnext101_32x8d", "bottleneck", (3, 4, 23, 3), 32, 8),
    ArchSpec("resnext101_64x4d", "bottleneck", (3, 4, 23, 3), 64, 4),
    ArchSpec("wide_resnet50_2", "bottleneck", (3, 4, 6, 3), 1, 128),
    ArchSpec("wide_resnet101_2", "bottleneck", (3, 4, 23, 3), 1, 128),
]
ARCHS: dict[str, ArchSpec] = {s.name: s for s in _SPECS}


def arch_names() -> list[str]:
    """The torchvision names (timm's come from ``timm_models.names()``, which needs timm)."""
    return list(ARCHS)


def check_arch(name: str) -> str:
    """Validate a torchvision name or ``timm/<name>``; the error names the valid choices in one line."""
    if timm_models.is_timm(name):
        timm_models.check_arch(name)
        return name
    if name not in ARCHS:
        raise UserError(f"unknown arch {name!r}: choose one of {choices(ARCHS)}, or timm/NAME for timm's ResNet "
                        "family (resnet-deploy export --list-archs)")
    return name


def list_archs() -> list[str]:
    """Lines for ``--list-archs``: both families, or a note when timm is not installed."""
    lines = [f"torchvision: {', '.join(ARCHS)}"]
    if timm_models.available():
        timm_names = timm_models.names()
        lines.append(f"timm ({len(timm_names)}): {', '.join(timm_names)}")
    else:
        lines.append("timm: not installed (pip install 'resnet-deploy[timm]' for timm/<name> architectures)")
    return lines


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture by name, with a one-line error naming the valid choices."""
    try:
        return ARCHS[name]
    except KeyError:
        raise unknown("arch", name, ARCHS) from None


def build(name: str, num_classes: int = 1000):
    """Build an untrained torchvision model of the given arch."""
    import torchvision

    get_arch(name)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def weights_enum(name: str):
    """torchvision's weights enum for the arch (e.g. ``ResNet50_Weights``)."""
    import torchvision

    return torchvision.models.get_model_weights(name)
