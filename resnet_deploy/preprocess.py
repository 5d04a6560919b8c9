"""Preprocessing that travels with the model (timm-style), and the image pipeline that applies it.

The pipeline is torchvision's (and timm's) eval transform written with PIL and NumPy, so that it can be reproduced
outside Python (the C++ loader follows the same steps): RGB -> resize the shorter side to ``resize`` with PIL's
bilinear or bicubic filter -> center crop to ``input_size`` -> scale to [0, 1] -> subtract mean, divide by std ->
NCHW float32. torchvision's ``Resize`` on a PIL image calls PIL's own resampling, so the pixels are the same.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MIN_INPUT_SIZE = 32
CROP_PCT = 0.875
INTERPOLATIONS = ("bilinear", "bicubic")  # PIL's filters of those names; timm's pretrained configs mostly say bicubic


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor."""

    input_size: tuple[int, int] = (224, 224)  # (height, width) of the crop the model sees
    resize: int = 256  # shorter side after resizing, before the center crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    color: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    steps: tuple[str, ...] = field(
        default=("decode_rgb", "resize_shorter_side", "center_crop", "scale", "normalize", "to_nchw")
    )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"], d["steps"] = list(self.mean), list(self.std), list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(
            input_size=tuple(int(v) for v in d["input_size"]),
            resize=int(d["resize"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            interpolation=check_interpolation(d.get("interpolation", "bilinear")),
            color=d.get("color", "RGB"),
            layout=d.get("layout", "NCHW"),
            scale=float(d.get("scale", 1.0 / 255.0)),
        )


def parse_input_size(value: "str | int | Sequence[int]") -> tuple[int, int]:
    """Parse ``S`` or ``HxW`` (each side >= 32) into (height, width)."""
    if isinstance(value, int):
        h = w = value
    elif isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise UserError(f"input size {value!r} must be S or HxW")
        h, w = (int(v) for v in value)
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(value))
        if not m:
            raise UserError(f"malformed --input-size {value!r}: use S (e.g. 224) or HxW (e.g. 224x320)")
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) else h
    if min(h, w) < MIN_INPUT_SIZE:
        raise UserError(f"--input-size {h}x{w} is too small: each side must be >= {MIN_INPUT_SIZE}")
    return h, w


def parse_triple(value: "str | Sequence[float] | None", name: str, default: tuple, positive: bool = False):
    """Parse three floats given as ``a,b,c`` (or a sequence); ``positive`` rejects values <= 0."""
    if value is None:
        return tuple(default)
    parts = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else list(value)
    try:
        nums = tuple(float(p) for p in parts if str(p) != "")
    except ValueError:
        raise UserError(f"{name} {value!r} must be three numbers, e.g. {','.join(str(x) for x in default)}") from None
    if len(nums) != 3 or not all(math.isfinite(n) for n in nums):
        raise UserError(f"{name} {value!r} must be three finite numbers, e.g. {','.join(str(x) for x in default)}")
    if positive and min(nums) <= 0:
        raise UserError(f"{name} {value!r} must be three numbers > 0")
    return nums


def check_interpolation(value: str) -> str:
    """``bilinear`` or ``bicubic`` (case-insensitive), else a one-line error naming both."""
    v = str(value).strip().lower()
    if v not in INTERPOLATIONS:
        raise UserError(f"unknown --interpolation {value!r}: choose one of {', '.join(INTERPOLATIONS)}")
    return v


def make_preprocessing(input_size="224", resize: int | None = None, mean=None, std=None,
                       interpolation: str = "bilinear", crop_pct: float = CROP_PCT,
                       default_mean=IMAGENET_MEAN, default_std=IMAGENET_STD) -> Preprocessing:
    """Build a validated ``Preprocessing`` from user-level options (defaults: ImageNet, crop ratio 0.875).

    ``crop_pct`` and the default mean / std are the model's own (timm's pretrained configs differ per model);
    an unset ``resize`` is ``floor(crop / crop_pct)``, as torchvision and timm compute it.
    """
    h, w = parse_input_size(224 if input_size is None else input_size)
    if resize is None:
        resize = int(max(h, w) / crop_pct)
    if resize < max(h, w):
        raise UserError(f"--resize {resize} is smaller than the crop {h}x{w}: it must be >= {max(h, w)}")
    return Preprocessing(
        input_size=(h, w),
        resize=int(resize),
        mean=parse_triple(mean, "--mean", default_mean),
        std=parse_triple(std, "--std", default_std, positive=True),
        interpolation=check_interpolation(interpolation),
    )


def resized_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``shorter``; matches torchvision's rounding."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def preprocess_image(image, pre: Preprocessing) -> np.ndarray:
    """Apply ``pre`` to a PIL image; returns a CHW float32 array."""
    from PIL import Image

    img = image.convert("RGB")
    resample = Image.BICUBIC if pre.interpolation == "bicubic" else Image.BILINEAR
    img = img.resize(resized_size(img.width, img.height, pre.resize), resample)
    ch, cw = pre.input_size
    top = int(round((img.height - ch) / 2.0))
    left = int(round((img.width - cw) / 2.0))
    img = img.crop((left, top, left + cw, top + ch))
    arr = np.asarray(img, dtype=np.float32) * np.float32(pre.scale)
    arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class UnreadableImage(UserError):
    """An image file PIL cannot decode; ``why`` is PIL's reason (first line)."""

    def __init__(self, path: "str | Path", why: str):
        super().__init__(f"cannot read image {str(path)!r}: {why}")
        self.path, self.why = Path(path), why


def read_image(path: "str | Path", pre: Preprocessing) -> np.ndarray:
    """Decode one image file and apply ``pre`` (CHW float32): how ``load_images``, and so export's reference
    inputs, read a file. A file PIL cannot decode raises ``UnreadableImage``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return preprocess_image(im, pre)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        # PIL reports a broken file in many ways (a bad PNG chunk is a SyntaxError): all mean "unreadable"
        raise UnreadableImage(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def list_images(root: "str | Path") -> list[Path]:
    """Image files under ``root`` (recursive), sorted for reproducibility."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_SUFFIXES else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class ImageSet:
    """Preprocessed images: ``data`` is NCHW float32; ``labels`` are class indices when the folder has classes."""

    data: np.ndarray
    paths: list[Path]
    skipped: list[tuple[Path, str]]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None

    def describe(self, root) -> str:
        """``images:7 from DIR`` plus how many files were skipped as unreadable (counted in every summary)."""
        skipped = f", {len(self.skipped)} unreadable skipped" if self.skipped else ""
        return f"images:{len(self.data)} from {root}{skipped}"


def load_images(root: "str | Path", pre: Preprocessing, limit: int | None = None, what: str = "--images") -> ImageSet:
    """Read and preprocess the images under ``root``; unreadable files are skipped and listed.

    An ImageFolder layout (one sub-folder per class, images inside) yields labels, with classes in sorted order
    as torchvision's ImageFolder numbers them.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"{what} path {str(root)!r} does not exist")
    paths = list_images(root)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    class_names = [d.name for d in subdirs] if subdirs and all(p.parent.parent == root for p in paths) else None
    if limit is not None:
        paths = paths[:limit]
    arrays, kept, skipped, labels = [], [], [], []
    for p in paths:
        try:
            arrays.append(read_image(p, pre))
        except UnreadableImage as e:
            skipped.append((p, e.why))
            continue
        kept.append(p)
        if class_names is not None:
            labels.append(class_names.index(p.parent.name))
    if not arrays:  # one line for the user: the count of unreadable files, not one warning each
        raise UserError(
            f"{what} {str(root)!r} holds no readable image ({', '.join(IMAGE_SUFFIXES)}; {len(skipped)} unreadable)"
        )
    if skipped:
        shown = "; ".join(f"{p.name} ({why})" for p, why in skipped[:3])
        log.warning("%s: skipped %d unreadable image(s): %s%s", what, len(skipped), shown,
                    " ..." if len(skipped) > 3 else "")
    return ImageSet(
        data=np.stack(arrays).astype(np.float32),
        paths=kept,
        skipped=skipped,
        labels=np.asarray(labels, dtype=np.int64) if class_names is not None else None,
        class_names=class_names,
    )
