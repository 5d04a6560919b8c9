"""The deploy bundle: a folder with the model files and ``manifest.json`` describing them.

A new bundle is built in a hidden temporary folder beside its destination and renamed into place only when
everything succeeded, so a failure or Ctrl-C leaves nothing behind. Later stages add files to an existing
bundle with ``BundleUpdate``, which writes each file under a temporary name and swaps the manifest last.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .models import sha256_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def toolchain_versions() -> dict:
    """Versions of everything that shaped the artifacts (None when not installed)."""
    from importlib import metadata

    from . import __version__

    out = {"resnet_deploy": __version__, "python": platform.python_version()}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "tensorrt", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def check_out_dir(out: "str | Path", force: bool) -> Path:
    """Refuse an existing non-empty folder without ``force``, a file in the way, or an unwritable parent."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {str(out)!r} exists and is not empty: pass --force to replace it")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # a real probe: os.access says yes to root even on read-only or virtual file systems
        os.rmdir(tempfile.mkdtemp(prefix=".resnet-deploy-probe-", dir=parent))
    except OSError as e:
        raise UserError(f"--out {str(out)!r} is not writable ({str(parent)!r}: {e.strerror or e})") from None
    return out


def file_entry(path: Path, **info) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_file(path), **{k: v for k, v in info.items() if v is not None}}


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


class BundleWriter:
    """Builds a new bundle atomically. Use as a context manager; ``path`` is the temporary folder to write into.

    >>> with BundleWriter(out, force=False) as b:      # doctest: +SKIP
    ...     export_onnx(model, b.path / "model.onnx", ...)
    ...     b.add_file("model.onnx", kind="onnx", precision="fp32")
    """

    def __init__(self, out: "str | Path", force: bool = False):
        self.out = check_out_dir(out, force)
        self.force = force
        self.manifest: dict = {
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv[:] if Path(sys.argv[0]).name.startswith("resnet-deploy") else None,
            "toolchain": toolchain_versions(),
            "files": {},
        }
        self.path: Path | None = None

    def __enter__(self) -> "BundleWriter":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))
        except OSError as e:
            raise UserError(f"--out {str(self.out)!r} is not writable: {e.strerror or e}") from None
        return self

    def add_file(self, name: str, **info) -> dict:
        """Record a file already written under ``path`` (size, sha256 and any info such as kind/precision)."""
        entry = file_entry(self.path / name, **info)
        self.manifest["files"][name] = entry
        return entry

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            write_json_atomic(self.path / MANIFEST, self.manifest)
            swap_in(self.path, self.out)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise


def swap_in(staged: Path, out: Path) -> None:
    """Move a fully written folder ``staged`` to ``out`` (a sibling), replacing any old ``out`` by renames."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(staged, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class BundleUpdate:
    """Adds files to an existing bundle with the same interface as ``BundleWriter``.

    New files are written into ``path``, a hidden staging folder inside the bundle; on success they are moved
    into the bundle and the manifest is replaced last; on failure the staging folder is removed and the bundle
    is unchanged. Replacing a file the bundle already has needs ``force``.
    """

    def __init__(self, bundle: "str | Path", force: bool = False):
        self.out = Path(bundle).absolute()
        self.manifest = read_manifest(self.out)
        self.force = force
        self.path: Path | None = None
        self._added: list[str] = []

    def __enter__(self) -> "BundleUpdate":
        self.path = Path(tempfile.mkdtemp(prefix=".stage-", dir=self.out))
        return self

    def add_file(self, name: str, **info) -> dict:
        """Record a file written to ``path / name``; it moves into the bundle when the update succeeds."""
        if (self.out / name).exists() and not self.force:
            raise UserError(f"{str(self.out / name)!r} already exists: pass --force to replace it")
        entry = file_entry(self.path / name, **info)
        self.manifest["files"][name] = entry
        self._added.append(name)
        return entry

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for name in self._added:
                    os.replace(self.path / name, self.out / name)
                write_json_atomic(self.out / MANIFEST, self.manifest)
        finally:
            shutil.rmtree(self.path, ignore_errors=True)


def locate(bundle, name: str) -> Path:
    """Where a bundle file is now: staged in ``bundle.path`` during a write/update, else in the bundle folder."""
    staged = bundle.path / name
    return staged if staged.exists() else bundle.out / name


def read_manifest(bundle: "str | Path") -> dict:
    """Load and minimally validate ``manifest.json`` of a bundle folder."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise UserError(f"bundle {str(bundle)!r} is not a folder")
    if not path.is_file():
        raise UserError(f"{str(bundle)!r} is not a resnet-deploy bundle: it has no {MANIFEST}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        got = data.get("schema_version") if isinstance(data, dict) else None
        raise UserError(f"{str(path)!r} has schema_version {got!r}; this resnet-deploy reads {SCHEMA_VERSION}")
    return data


def find_artifacts(manifest: dict, kind: str | None = None, precision: str | None = None,
                   target: str | None = None) -> list[str]:
    """Names of the bundle's files matching kind / precision / target (manifest order)."""
    out = []
    for name, e in manifest.get("files", {}).items():
        if (kind is None or e.get("kind") == kind) and (precision is None or e.get("precision") == str(precision)) \
                and (target is None or e.get("target") == str(target)):
            out.append(name)
    return out


def load_eager(bundle):
    """The bundle's eager reference model (its ``torch.export`` program) as a callable ``nn.Module``.

    ``bundle`` is a bundle folder, or a ``BundleWriter``/``BundleUpdate`` being written (the file may be staged).
    """
    from .onnx_export import load_exported_program

    if isinstance(bundle, (BundleWriter, BundleUpdate)):
        manifest, where, label = bundle.manifest, lambda n: locate(bundle, n), bundle.out
    else:
        manifest, where, label = read_manifest(bundle), lambda n: Path(bundle) / n, bundle
    names = find_artifacts(manifest, kind="torch-exported-program")
    if not names:
        raise UserError(f"bundle {str(label)!r} has no eager reference (model.pt2): re-export it")
    return load_exported_program(where(names[0]))


def verify(bundle: "str | Path") -> list[str]:
    """Re-check every file's size and sha256 against the manifest; returns the problems (empty when all good)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = []
    for name, entry in manifest.get("files", {}).items():
        p = bundle / name
        if not p.is_file():
            problems.append(f"{name}: missing")
        elif p.stat().st_size != entry.get("size"):
            problems.append(f"{name}: size {p.stat().st_size} != manifest {entry.get('size')}")
        elif sha256_file(p) != entry.get("sha256"):
            problems.append(f"{name}: sha256 mismatch")
    return problems
