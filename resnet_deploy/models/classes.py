"""Class names that travel with the bundle: ``manifest["classes"] = {"names": [...], "source": "..."}``.

Where they come from, first match wins: ``--class-names FILE`` (one name per line); a torchvision arch with 1000
classes (its weights enum's ``meta["categories"]``, which torchvision ships in its code); a timm arch whose class
count timm maps to an ImageNet subset (``timm.data.ImageNetInfo``, shipped with timm). Otherwise there are no names
and readers show the class index. Nothing here downloads anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

KEY = "classes"  # the manifest key


@dataclass(frozen=True)
class ClassNames:
    """One name per class index, and where the names came from (recorded as the manifest's ``source``)."""

    names: tuple[str, ...]
    source: str

    def to_manifest(self) -> dict:
        return {"names": list(self.names), "source": self.source}

    def check_count(self, num_classes: int) -> None:
        """Refuse names that do not match the model's outputs: one line naming the source and both counts."""
        if len(self.names) != num_classes:
            raise UserError(f"{self.source} holds {len(self.names)} class name(s) but the model has {num_classes} "
                            "classes: give one name per line, one line per class")


def read_class_names(path: "str | Path") -> ClassNames:
    """The names in a UTF-8 text file, one per line (surrounding whitespace and blank trailing lines dropped);
    a missing, unreadable or empty file, or a blank line between names, is a one-line error."""
    p = Path(path).expanduser()
    where = f"--class-names {str(path)!r}"
    if not p.exists():
        raise UserError(f"{where} does not exist")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark some editors write is not a name
    except UnicodeDecodeError as e:
        raise UserError(f"{where} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"{where} cannot be read ({type(e).__name__}: {e.strerror or e})") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise UserError(f"{where} holds no class names: give one name per line")
    blank = next((i for i, name in enumerate(names) if not name), None)
    if blank is not None:
        raise UserError(f"{where} line {blank + 1} is blank: give one name per line, one line per class")
    return ClassNames(tuple(names), f"--class-names {path}")


def given(class_names) -> "ClassNames | None":
    """The user's names: a file path (``--class-names``), a sequence of names (the Python API), or None."""
    if class_names is None or isinstance(class_names, ClassNames):
        return class_names
    if isinstance(class_names, (str, Path)):
        return read_class_names(class_names)
    names = tuple(str(n) for n in class_names)
    if not names:
        raise UserError("class_names is empty: give one name per class")
    return ClassNames(names, "class_names argument")


def torchvision_classes(arch: str, weights: dict, num_classes: int) -> "ClassNames | None":
    """ImageNet's 1000 names from torchvision's weights enum: the loaded weights' own entry, else the arch's
    DEFAULT (random weights or a checkpoint: a 1000-class torchvision head is ImageNet's); None for any other
    class count."""
    from . import registry

    if num_classes != 1000:
        return None
    enum = registry.weights_enum(arch)
    member = enum.DEFAULT
    name = weights.get("name") if weights.get("source") == "torchvision" else None
    if name and name.split(".")[-1] in enum.__members__:
        member = enum[name.split(".")[-1]]
    categories = member.meta.get("categories")
    if not categories or len(categories) != num_classes:
        return None
    return ClassNames(tuple(categories), f"torchvision {enum.__name__}.{member.name}")


def timm_classes(num_classes: int) -> "ClassNames | None":
    """timm's ImageNet class descriptions for the subset it infers from the class count (imagenet-1k for 1000,
    imagenet-12k for 11821, ...), from the files timm ships; None when timm knows no subset of that size."""
    from . import timm_models

    timm_models.require()
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        return None
    try:
        info = ImageNetInfo(subset)
    except (AssertionError, AttributeError, KeyError, OSError):  # a subset this timm names but does not ship
        return None
    if info.num_classes() != num_classes:
        return None
    return ClassNames(tuple(info.index_to_description(i) for i in range(num_classes)), f"timm {subset}")


def arch_classes(arch: str, weights: dict, num_classes: int) -> "ClassNames | None":
    """The names a torchvision or ``timm/<name>`` architecture brings for ``num_classes`` (None: none known)."""
    from . import timm_models

    if timm_models.is_timm(arch):
        return timm_classes(num_classes)
    return torchvision_classes(arch, weights, num_classes)


def from_manifest(manifest: dict) -> "ClassNames | None":
    """The bundle's class names, or None when it records none (readers then show the index)."""
    entry = manifest.get(KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("names"), list):
        return None
    return ClassNames(tuple(str(n) for n in entry["names"]), str(entry.get("source", "")))
