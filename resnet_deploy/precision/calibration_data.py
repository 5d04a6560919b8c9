"""Calibration and validation data: an image folder (the bundle's own preprocessing) or ``.npy`` / ``.npz``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..preprocess import Preprocessing, load_images

log = logging.getLogger(__name__)

FEW_IMAGES = 100  # fewer calibration images than this gives noisy ranges
ARRAY_SUFFIXES = (".npy", ".npz")
LABEL_KEYS = ("labels", "y", "targets")


@dataclass
class DataSet:
    """Preprocessed NCHW float32 samples, optional labels, and where they came from."""

    data: np.ndarray
    source: str
    labels: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def sha256(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.data).tobytes())
        h.update(str(self.data.shape).encode())
        return h.hexdigest()


def check_path(path: "str | Path | None", what: str) -> Path:
    """Fail fast (before any export work) on a missing path or an unsupported file."""
    if path is None:
        raise UserError(f"{what} is required")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} path {str(p)!r} does not exist")
    if p.is_file() and p.suffix.lower() not in ARRAY_SUFFIXES + (".jpg", ".jpeg", ".png", ".webp", ".bmp"):
        raise UserError(f"{what} file {str(p)!r} must be an image folder, an image, a .npy or a .npz")
    return p


def _check_array(arr: np.ndarray, name: str, pre: Preprocessing, what: str) -> np.ndarray:
    want = (3, *pre.input_size)
    if arr.dtype != np.float32:
        raise UserError(f"{what} {name!r} has dtype {arr.dtype}: it must be preprocessed float32 (N, {want[0]}, "
                        f"{want[1]}, {want[2]})")
    if arr.ndim != 4 or tuple(arr.shape[1:]) != want or arr.shape[0] == 0:
        raise UserError(f"{what} {name!r} has shape {tuple(arr.shape)}: it must be (N, {want[0]}, {want[1]}, "
                        f"{want[2]}) NCHW, as the bundle's preprocessing gives")
    check_finite_samples(arr, name, what)
    return arr


def check_finite_samples(arr: np.ndarray, name: str, what: str, chunk: int = 64) -> None:
    """Refuse samples holding NaN/Inf with one line naming the file and the first bad sample index."""
    bad: list[int] = []
    for i in range(0, len(arr), chunk):  # chunked: a finiteness mask of a whole calibration set is large
        rows = ~np.isfinite(arr[i:i + chunk]).reshape(len(arr[i:i + chunk]), -1).all(axis=1)
        bad.extend(int(i + k) for k in np.flatnonzero(rows))
    if bad:
        raise UserError(f"{what} {name!r}: sample {bad[0]} holds NaN/Inf values ({len(bad)} of {len(arr)} samples "
                        "are not finite): clean the data or drop those samples")


def _load_arrays(p: Path, pre: Preprocessing, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{what} {str(p)!r} is not a readable {p.suffix} file: {str(e).splitlines()[0]}") from None
    if isinstance(loaded, np.ndarray):
        return _check_array(loaded, str(p), pre, what), None
    with loaded:
        keys = list(loaded.files)
        batches = [_check_array(loaded[k], f"{p}[{k}]", pre, what) for k in keys
                   if k not in LABEL_KEYS]
        labels = next((loaded[k] for k in LABEL_KEYS if k in keys), None)
    if not batches:
        raise UserError(f"{what} {str(p)!r} holds no (N, 3, H, W) float32 array")
    data = batches[0] if len(batches) == 1 else np.concatenate(batches)  # one array: no 2nd copy of a large set
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{what} {str(p)!r}: labels must be {len(data)} integers, got {labels.shape} "
                            f"{labels.dtype}")
        labels = labels.astype(np.int64)
    return data, labels


def load_dataset(path: "str | Path", pre: Preprocessing, limit: int | None, what: str) -> DataSet:
    """Load up to ``limit`` samples. Image folders are read recursively; ImageFolder layout gives labels."""
    p = check_path(path, what)
    if p.suffix.lower() in ARRAY_SUFFIXES and p.is_file():
        data, labels = _load_arrays(p, pre, what)
        if limit is not None and limit < len(data):  # a copy, so that the rest of a large file can be freed
            data, labels = data[:limit].copy(), (labels[:limit] if labels is not None else None)
        return DataSet(np.ascontiguousarray(data), f"{p.name}:{len(data)}", labels)
    imgs = load_images(p, pre, limit=limit, what=what)
    skipped = [f"{q}: {why}" for q, why in imgs.skipped]
    return DataSet(imgs.data, imgs.describe(p), imgs.labels, skipped)


def load_calibration(path: "str | Path", pre: Preprocessing, size: int) -> DataSet:
    """Calibration set with the issue's rules: warn under ``FEW_IMAGES``, list skipped files."""
    ds = load_dataset(path, pre, size, "--calib")
    if len(ds.data) < FEW_IMAGES:
        noun = "samples" if Path(path).suffix.lower() in ARRAY_SUFFIXES else "images"
        msg = (f"only {len(ds.data)} calibration {noun} (fewer than {FEW_IMAGES}): activation ranges may be "
               f"noisy; use more representative {noun}")
        log.info(msg)  # a warning of the result: the caller shows it once (the CLI prints it, the manifest keeps it)
        ds.warnings.append(msg)
    if ds.skipped:
        ds.warnings.append(f"{len(ds.skipped)} unreadable calibration file(s) skipped: {'; '.join(ds.skipped)}")
    return ds
