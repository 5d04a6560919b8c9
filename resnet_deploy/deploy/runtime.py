"""The bundle as a Python runtime: ``load(bundle) -> Model``, then ``model.predict(images)`` or ``model(x)``.

``load`` reads the manifest (a name that leaves the bundle is refused), picks one artifact and a backend of the
backend table to run it, checks that file's size and sha256, and activates the backend's runner. The pick:

1. ``bench``'s measurement for this ``device`` and ``mode`` (``manifest["recommended"][device][mode]``): the
   recommended row, then the best row of every other backend it measured (``by_backend``), fastest first. The first
   row that satisfies the caller's ``backend`` / ``precision`` and runs here is taken.
2. Without such a row: the precision asked for, else fp32 (the reference precision; a faster one is chosen only
   where ``bench`` measured it, because what is faster depends on the machine: an fp16 graph runs slower than fp32
   in ONNX Runtime on x86 CPUs), then the other precisions in the ``Precision`` order; at each precision the
   backend asked for, else the table's default backends for ``device`` available here, in the table's order. The
   eager reference program (``model.pt2``) is not a deploy artifact: it runs only when its backend is named.

A row or artifact "runs here" when its backend is available (installed; a GPU backend also needs a GPU that torch
sees), the machine can run its precision (``cannot_run``), the bundle lists the file and no validation record of
it failed. The bundle keeps only artifacts that met their bar (a precision that missed it is left out), so a
listed artifact is a validated one. ``model.describe()`` says what was picked and why.

Thread safety: one lock serialises the calls into the runtime (one batch at a time, which is how every backend's
latency mode runs: one request using every core). Decoding, preprocessing, softmax and top-k run in the calling
thread, outside the lock, so threads overlap their image work with inference. Results do not depend on which
thread asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends import table
from ..backends.table import BackendSpec, RunnerOptions
from ..bundle import read_manifest, verified
from ..errors import CheckFailed, UserError, unknown
from ..layout import Kind, inference_validation
from ..preprocess import IMAGE_SUFFIXES, Preprocessing, UnreadableImage, list_images, preprocess_image, read_image
from ..types import Precision

log = logging.getLogger(__name__)

DEFAULT_BATCH = 8  # images per runtime call when neither the caller nor bench's pick says


@dataclass(frozen=True)
class Prediction:
    """One class of an image's top-k: its index, its label (the bundle's class name, else the index) and its
    softmax probability."""

    index: int
    label: str
    score: float


@dataclass(frozen=True)
class ImageResult:
    """One image of ``Model.predictions``: the input as given (a file's path), its top-k (None when it could not be
    read), the milliseconds it took (its decoding and preprocessing plus its share of its batch's inference) and,
    for an unreadable image, why."""

    image: object
    top: "list[Prediction] | None"
    ms: float
    error: str | None = None


@dataclass(frozen=True)
class Pick:
    """The artifact ``load`` runs: which backend runs which file at which precision, why, and the batch ``bench``
    measured it at (None when bench did not pick it)."""

    backend: str
    precision: Precision
    artifact: str
    why: str
    batch: int | None = None


# ----------------------------------------------------------------------------------------------- the pick
def _validation_failed(manifest: dict, artifact: str, precision: Precision) -> bool:
    records = manifest.get("validation", {})
    record = records.get(inference_validation(artifact, precision)) or records.get(artifact) or {}
    return record.get("passed", True) is False


def _cannot_run(manifest: dict, spec: BackendSpec, precision: Precision, artifact: str) -> str | None:
    """Why ``spec`` cannot run ``artifact`` at ``precision`` here, None when it can."""
    missing = spec.unavailable_reason()
    if missing:
        return missing
    if spec.device == "gpu" and not table.cuda_available():
        return "no GPU that torch sees here"
    unsupported = spec.cannot_run(precision)
    if unsupported:
        return unsupported
    if artifact not in manifest.get("files", {}):
        return f"the bundle does not list {artifact}"
    if _validation_failed(manifest, artifact, precision):
        return "its validation record in the bundle did not pass"
    return None


def _parse_precision(value) -> Precision | None:
    try:
        return Precision.parse(value)
    except UserError:
        return None


def _measured(manifest: dict, device: str, mode: str, spec: BackendSpec | None, precision: Precision | None,
              skipped: list[str]) -> Pick | None:
    """The fastest row ``bench`` recorded for ``device`` / ``mode`` that fits the request and runs here."""
    entry = (manifest.get("recommended") or {}).get(device) or {}
    best = entry.get(mode)
    if not isinstance(best, dict):
        return None
    rows = [best, *(r for r in (best.get("by_backend") or {}).values() if isinstance(r, dict))]
    seen = set()
    for rank, row in enumerate(rows):
        name, prec, artifact = row.get("backend"), _parse_precision(row.get("precision")), row.get("artifact")
        if (name, prec, artifact) in seen or prec is None or not artifact:
            continue
        seen.add((name, prec, artifact))
        if (spec is not None and name != spec.name) or (precision is not None and prec != precision):
            continue
        label = f"{name} {prec} ({artifact})"
        if name not in table.names():
            skipped.append(f"{label}: no such backend here")
            continue
        why = _cannot_run(manifest, table.get(name), prec, artifact)
        if why:
            skipped.append(f"{label}: {why}")
            continue
        which = f"bench's {mode} pick" if rank == 0 else f"the fastest {name} row of bench's {mode} run"
        timing = f"p50 {row.get('p50_ms')} ms" if mode == "latency" else f"{row.get('throughput_ips')} img/s"
        return Pick(name, prec, artifact, f"{which} for {device} (measured on {entry.get('cpu') or 'an unnamed CPU'}"
                    f": {timing} at batch {row.get('batch')})", row.get("batch"))
    return None


def _default(manifest: dict, device: str, spec: BackendSpec | None, precision: Precision | None,
             skipped: list[str]) -> Pick | None:
    """The documented rule without a measurement: fp32 first (or the precision asked for), then the table's order."""
    precisions = [precision] if precision is not None else list(Precision)
    specs = [spec] if spec is not None else [s for s in table.runnable_by_default() if s.device == device]
    for prec in precisions:
        for s in specs:
            artifact = s.artifact(manifest, prec)
            if artifact is None:
                continue
            if spec is None and manifest["files"].get(artifact, {}).get("kind") == str(Kind.EAGER):
                continue  # the eager reference is not a deploy artifact: it runs when its backend is named
            why = _cannot_run(manifest, s, prec, artifact)
            if why:
                skipped.append(f"{s.name} {prec} ({artifact}): {why}")
                continue
            asked = " and ".join(filter(None, [spec and f"backend {spec.name}",
                                               precision and f"precision {precision}"]))
            first = "the reference precision" if prec == Precision.FP32 else "no fp32 artifact runs here"
            rule = (f"asked for {asked}" if asked else f"no usable bench measurement: the first of the table's "
                    f"{device} backends that runs here, at {prec} ({first})")
            return Pick(s.name, prec, artifact, rule)
    return None


def inventory(manifest: dict) -> list[str]:
    """What the bundle holds, per backend and precision, with what stops each from running here."""
    out = []
    for spec in table.all_backends():
        for prec in Precision:
            artifact = spec.artifact(manifest, prec)
            if artifact is not None:
                why = _cannot_run(manifest, spec, prec, artifact)
                out.append(f"{spec.name} {prec} ({artifact})" + (f" [{why}]" if why else ""))
    return out


def choose(bundle: "str | Path", manifest: dict, device: str = "cpu", mode: str = "latency",
           backend: "str | BackendSpec | None" = None, precision: "str | Precision | None" = None) -> Pick:
    """The artifact ``load`` runs (see the module's docstring for the rule). Raises ``UserError`` naming what the
    bundle has and what stops it from running here when nothing fits, and ``MissingDependency`` (the install hint)
    for a backend asked for by name that is not installed."""
    if device not in table.DEVICES:
        raise unknown("device", device, table.DEVICES)
    if mode not in table.MODES:
        raise unknown("mode", mode, table.MODES)
    spec = table.get(backend) if backend is not None else None
    prec = Precision.parse(precision, "precision") if precision is not None else None
    if spec is not None:
        if spec.device != device:
            raise UserError(f"backend {spec.name} runs on {spec.device}, not {device}: pass device={spec.device!r} "
                            f"(--device {spec.device})")
        spec.available()
    skipped: list[str] = []
    pick = _measured(manifest, device, mode, spec, prec, skipped) or _default(manifest, device, spec, prec, skipped)
    if pick is None:
        asked = " ".join(filter(None, [spec.name if spec else None, str(prec) if prec else None])) or device
        hint = "" if prec is None or any(s.artifact(manifest, prec) for s in table.all_backends()) else \
            f" (write one with resnet-deploy quantize {bundle} --{prec}{' --calib DIR' * (prec == Precision.INT8)})"
        raise UserError(f"bundle {str(bundle)!r} has no {asked} artifact that runs here{hint}; it has: "
                        f"{'; '.join(inventory(manifest)) or 'nothing runnable'}")
    if skipped:
        passed_over = "; ".join(dict.fromkeys(skipped))
        pick = Pick(pick.backend, pick.precision, pick.artifact, f"{pick.why}; passed over: {passed_over}", pick.batch)
    return pick


# ----------------------------------------------------------------------------------------------- inputs
def _is_one_image(images) -> bool:
    from PIL import Image

    return isinstance(images, (str, Path, np.ndarray, Image.Image))


def expand_images(images) -> list:
    """The images ``predict`` reads, in order: one image or a sequence of them, each folder replaced by the image
    files under it (recursive, sorted, suffixes ``IMAGE_SUFFIXES``). ``predict``'s results follow this list."""
    out = []
    for item in ([images] if _is_one_image(images) else list(images)):
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            found = list_images(item)
            if not found:
                raise UserError(f"folder {str(item)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(item)
    return out


def _labels(manifest: dict) -> list[str] | None:
    """The bundle's class names (``manifest["classes"]["names"]``), None when it has none."""
    classes = manifest.get("classes")
    if not classes:
        return None
    names = classes.get("names") if isinstance(classes, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError("the bundle's manifest 'classes' has no list of names ('names': [str, ...])")
    count = manifest.get("num_classes")
    if count is not None and len(names) != count:
        raise UserError(f"the bundle lists {len(names)} class names for a model with {count} classes")
    return names


# ----------------------------------------------------------------------------------------------- the model
class Model:
    """A bundle's artifact, running: ``predict(images, top_k)`` for images, ``model(x)`` for NCHW float32 input.

    Made by ``load``; close it with ``close()`` or use it in a ``with`` block. Safe to call from several threads
    (one lock around the runtime; see the module's docstring)."""

    def __init__(self, bundle: Path, manifest: dict, pick: Pick, runner, *, device: str, mode: str, batch: int):
        self.bundle, self.manifest, self.pick = bundle, manifest, pick
        self.device, self.mode, self.batch = device, mode, batch
        self.preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        self.labels = _labels(manifest)
        self.num_classes = manifest.get("num_classes")
        self._runner = runner
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.pick.backend

    @property
    def precision(self) -> Precision:
        return self.pick.precision

    @property
    def artifact(self) -> str:
        return self.pick.artifact

    def describe(self) -> dict:
        """Which artifact, backend and precision run, why they were picked, and what the runtime reports."""
        with self._lock:
            runner = self._runner.describe() if self._runner is not None else "closed"
        source = (self.manifest.get("classes") or {}).get("source") or "the manifest"
        return {"bundle": str(self.bundle), "backend": self.backend, "precision": str(self.precision),
                "artifact": self.artifact, "why": self.pick.why, "device": self.device, "mode": self.mode,
                "batch": self.batch, "labels": f"class names from {source}" if self.labels else "class index",
                "runtime": runner}

    def __repr__(self) -> str:
        return f"Model({self.backend} {self.precision} {self.artifact}, batch {self.batch})"

    # ------------------------------------------------------------------------------------------- inference
    def _run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._runner is None:
                raise RuntimeError(f"{self!r} is closed")
            y = self._runner.infer(x)
        y = np.asarray(y, dtype=np.float32)
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise CheckFailed(f"{self.backend} returned logits of shape {y.shape} for a batch of {x.shape[0]}")
        bad = ~np.isfinite(y).all(axis=1)
        if bad.any():
            raise CheckFailed(f"{self.backend} {self.precision} ({self.artifact}) returned NaN/Inf logits for "
                              f"{int(bad.sum())} of {len(y)} inputs")
        return y

    def __call__(self, x) -> np.ndarray:
        """Logits (N, classes) float32 for ``x``: float NCHW at the bundle's input size, run ``batch`` at a time.
        NaN or Inf in the logits is a ``CheckFailed``, never a result."""
        x = np.asarray(x)
        h, w = self.preprocessing.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, h, w) or not np.issubdtype(x.dtype, np.floating):
            raise UserError(f"model input must be float32 NCHW (N, 3, {h}, {w}), got {x.dtype} {tuple(x.shape)}: "
                            "use predict() for images")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return np.zeros((0, self.num_classes or 0), np.float32)
        return np.concatenate([self._run(x[i:i + self.batch]) for i in range(0, len(x), self.batch)])

    def preprocess(self, image) -> np.ndarray:
        """One image as the model sees it (CHW float32), through the bundle's own preprocessing: a file path, a
        PIL image or a uint8 HxWx3 (or HxW, HxWx4) array. An unreadable file raises ``UnreadableImage``."""
        from PIL import Image

        if isinstance(image, (str, Path)):
            return read_image(image, self.preprocessing)
        if isinstance(image, Image.Image):
            return preprocess_image(image, self.preprocessing)
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and (
                image.ndim == 2 or image.ndim == 3 and image.shape[2] in (1, 3, 4)):
            return preprocess_image(Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1
                                                    else image), self.preprocessing)
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise UserError(f"cannot read an image from a {what}: give a path, a folder, a PIL image or a uint8 HxWx3 "
                        "array (model(x) takes preprocessed float32 NCHW)")

    def top(self, logits: np.ndarray, top_k: int = 5) -> list[list[Prediction]]:
        """The ``top_k`` classes per row of ``logits``, by softmax probability (ties: the lower index first)."""
        if int(top_k) < 1:
            raise UserError(f"top_k {top_k} must be >= 1")
        logits = np.asarray(logits, dtype=np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        order = np.argsort(-logits, axis=1, kind="stable")[:, :int(top_k)]  # top-1 is argmax's first maximum
        names = self.labels
        return [[Prediction(int(i), names[i] if names else str(int(i)), float(p[i])) for i in row]
                for row, p in zip(order, probs)]

    def predictions(self, images, top_k: int = 5, *, skip_unreadable: bool = False) -> Iterator[ImageResult]:
        """One ``ImageResult`` per image of ``expand_images(images)``, in order, ``batch`` images per runtime call.
        An unreadable file raises ``UnreadableImage``, or with ``skip_unreadable`` gives a result with ``error``."""
        if int(top_k) < 1:
            raise UserError(f"top_k {top_k} must be >= 1")
        items = expand_images(images)
        for start in range(0, len(items), self.batch):
            chunk = items[start:start + self.batch]
            arrays, ms, errors = {}, [], {}
            for i, item in enumerate(chunk):
                began = time.perf_counter()
                try:
                    arrays[i] = self.preprocess(item)
                except UnreadableImage as e:
                    if not skip_unreadable:
                        raise
                    errors[i] = str(e)
                ms.append((time.perf_counter() - began) * 1e3)
            began = time.perf_counter()
            tops = dict(zip(arrays, self.top(self(np.stack(list(arrays.values()))), top_k))) if arrays else {}
            share = (time.perf_counter() - began) * 1e3 / max(len(arrays), 1)
            for i, item in enumerate(chunk):
                yield ImageResult(item, tops.get(i), ms[i] + (share if i in tops else 0.0), errors.get(i))

    def predict(self, images, top_k: int = 5) -> list[list[Prediction]]:
        """The ``top_k`` predictions of each image: ``images`` is a path, a folder (read recursively), a PIL image,
        a uint8 HxWx3 array, or a sequence of those. One list per image of ``expand_images(images)``."""
        return [r.top for r in self.predictions(images, top_k)]

    # ------------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the runtime (waits for a call in flight); the model cannot run afterwards."""
        with self._lock:
            if self._runner is not None:
                self._runner.deactivate()
                self._runner = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(bundle: "str | Path", backend: "str | None" = None, precision: "str | Precision | None" = None,
         device: str = "cpu", *, mode: str = "latency", batch: int | None = None,
         threads: int | None = None, spinning: bool = True) -> Model:
    """Open ``bundle`` for inference and return its ``Model``.

    ``backend`` (a name of the backend table) and ``precision`` (fp32, fp16, bf16, int8) narrow the pick; left
    out, the bundle's ``recommended`` entry for ``device`` (cpu or gpu) and ``mode`` (latency or throughput)
    decides, else fp32 on the first of the table's default backends that runs here (the rule: this module's
    docstring and docs/runtime.md). ``batch``: images per runtime call (default: the batch bench measured the
    pick at, else 8). ``threads``: the runtime's intra-op threads (default: the runtime's own). ``spinning``:
    whether idle runtime threads spin-wait (the runtimes' default; off suits a busy or shared machine, as bench's
    ``--quiet-threads``).

    Raises ``UserError`` (one line, exit 2) for a bundle that names a file outside itself, an unknown backend or
    precision, or an artifact the bundle lacks (listing what it has and what stops each from running here);
    ``MissingDependency`` (the install hint) for a backend asked for that is not installed; ``CheckFailed`` (exit
    1) when the picked file does not match its checksum."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if batch is not None and int(batch) < 1:
        raise UserError(f"batch {batch} must be >= 1")
    if "preprocessing" not in manifest:
        raise UserError(f"bundle {str(bundle)!r} records no preprocessing: re-export it with this resnet-deploy")
    _labels(manifest)  # a bad class list is one line before any runtime starts
    pick = choose(bundle, manifest, device, mode, backend, precision)
    verified(bundle, manifest, pick.artifact)
    batch = int(batch or pick.batch or DEFAULT_BATCH)
    options = RunnerOptions(mode=mode, batches=(batch,), threads=threads, spinning=spinning,
                            device="cuda" if device == "gpu" else "cpu")
    runner = table.get(pick.backend).runner(bundle, pick.artifact, pick.precision, options)
    runner.activate()
    log.info("loaded %s %s (%s) from %s: %s", pick.backend, pick.precision, pick.artifact, bundle, pick.why)
    return Model(bundle, manifest, pick, runner, device=device, mode=mode, batch=batch)
