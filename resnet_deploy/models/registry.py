"""The one registry of supported architectures; CLI choices come from here and cannot drift.

Two families: the torchvision ResNets below (always there), and timm's ResNet family as ``timm/<name>`` when the
optional timm extra is installed (``timm_models`` says which names and why).
"""

from __future__ import annotations

from . import timm_models
from ..errors import UserError, choices, unknown

# Built by torchvision (``torchvision.models.get_model``), which knows their blocks and widths.
ARCHS: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
)


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
    """Lines for ``--list-archs``: a heading per family, then one architecture per line (easy to read and to grep),
    or a note when timm is not installed."""
    lines = [f"torchvision ({len(ARCHS)}):", *(f"  {name}" for name in ARCHS)]
    if timm_models.available():
        timm_names = timm_models.names()
        lines += [f"timm ({len(timm_names)}):", *(f"  {name}" for name in timm_names)]
    else:
        lines.append("timm: not installed (pip install 'resnet-deploy[timm]' for timm/<name> architectures)")
    return lines


def get_arch(name: str) -> str:
    """A torchvision architecture name, checked, with a one-line error naming the valid choices."""
    if name not in ARCHS:
        raise unknown("arch", name, ARCHS)
    return name


def build(name: str, num_classes: int = 1000):
    """Build an untrained torchvision model of the given arch."""
    import torchvision

    get_arch(name)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def weights_enum(name: str):
    """torchvision's weights enum for the arch (e.g. ``ResNet50_Weights``)."""
    import torchvision

    return torchvision.models.get_model_weights(name)
