"""The deploy bundle: a folder with the model files and ``manifest.json`` describing them.

A new bundle is built in a hidden temporary folder beside its destination and renamed into place only when
everything succeeded, so a failure or Ctrl-C leaves nothing behind. Later stages add files to an existing
bundle with ``BundleUpdate``, which writes each file under a temporary name and swaps the manifest last.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import logging
import os
import platform
import sys
from pathlib import Path, PureWindowsPath

from .errors import CheckFailed, UserError
from .files import StagedDir, StagedFiles, check_output, locked, sha256_file, write_json_atomic
from .layout import EAGER_PROGRAM, MANIFEST, Kind, companions

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def toolchain_versions() -> dict:
    """Versions of everything that shaped the artifacts (None when not installed)."""
    from importlib import metadata

    from .version import __version__

    out = {"resnet_deploy": __version__, "python": platform.python_version()}
    for dist in ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "tensorrt", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def check_out_dir(out: "str | Path", force: bool) -> Path:
    """Refuse an existing non-empty folder without ``force``, a file in the way, or an unwritable parent."""
    return check_output(out, force, "--out")


def file_entry(path: Path, digest: "tuple[int, str] | None" = None, **info) -> dict:
    """A manifest file entry: size, sha256 and tags (kind, precision, target ...; enums stored as their value).
    ``digest``: (size, sha256) of the bytes just written, so the file is not read back to hash it."""
    tags = {k: str(v) if isinstance(v, enum.Enum) else v for k, v in info.items() if v is not None}
    size, sha = digest if digest is not None else (path.stat().st_size, sha256_file(path))
    return {"size": size, "sha256": sha, **tags}


class GraphHandover:
    """The ONNX graphs a run wrote, kept in memory for the stages that follow: a stage writes its graph with
    ``add_graph`` (serialised once; size and sha256 come from the bytes written) and a later stage asks
    ``graph(name)`` instead of parsing the file again. ``drop_graphs`` releases them once no stage needs them.
    Mixed into ``BundleWriter`` and ``BundleUpdate``, which provide ``path``, ``manifest`` and ``add_file``."""

    def _graphs(self) -> dict:
        if not hasattr(self, "_graph_protos"):
            self._graph_protos = {}
        return self._graph_protos

    def add_graph(self, name: str, proto, *, external: bool | None = None, keep: bool = True, **info) -> dict:
        """Write ``proto`` as bundle file ``name`` and record it; its weights go to ``<name>.data`` when
        ``external`` (None: past protobuf's limit), recorded as their own entry. With ``keep`` the proto is kept
        for later stages (the caller must not change it afterwards); without, a kept older one is forgotten."""
        from .layout import Kind, external_data
        from .onnx_graph import EXTERNAL_DATA_THRESHOLD, save_model

        path = self.path / name
        if external is None:
            external = proto.ByteSize() > EXTERNAL_DATA_THRESHOLD * 0.9
        if external:
            save_model(proto, path, external_data=True)
            entry = self.add_file(name, **info)
            self.add_file(external_data(name), kind=Kind.ONNX_DATA, precision=info.get("precision"))
        else:
            data = proto.SerializeToString()  # the bytes onnx.save writes
            path.write_bytes(data)
            entry = self.add_file(name, digest=(len(data), hashlib.sha256(data).hexdigest()), **info)
            del data
        if keep:
            self._graphs()[name] = proto
        else:
            self._graphs().pop(name, None)
        return entry

    def graph(self, name: str):
        """The ``ModelProto`` of bundle graph ``name``: the one this run wrote (not a copy: do not change it), else
        parsed from the bundle after verification."""
        if name in self._graphs():
            return self._graphs()[name]
        import onnx

        return onnx.load(str(locate(self, name)))

    def drop_graphs(self) -> None:
        """Forget the graphs kept in memory (the stages that read them are done)."""
        self._graphs().clear()


class BundleWriter(GraphHandover, StagedDir):
    """Builds a new bundle atomically. Use as a context manager; ``path`` is the temporary folder to write into.

    The manifest is written last and the folder renamed into place; an ``--out`` that appeared meanwhile (a
    concurrent export) is refused without ``force``.

    >>> with BundleWriter(out, force=False) as b:      # doctest: +SKIP
    ...     export_onnx(model, b.path / "model.onnx", ...)
    ...     b.add_file("model.onnx", kind="onnx", precision="fp32")
    """

    def __init__(self, out: "str | Path", force: bool = False):
        super().__init__(out, force, "--out")
        self.manifest: dict = {
            "schema_version": SCHEMA_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": sys.argv[:] if Path(sys.argv[0]).name.startswith("resnet-deploy") else None,
            "toolchain": toolchain_versions(),
            "files": {},
        }

    def add_file(self, name: str, digest: "tuple[int, str] | None" = None, **info) -> dict:
        """Record a file already written under ``path`` (size, sha256 and any info such as kind/precision)."""
        entry = file_entry(self.path / name, digest, **info)
        self.manifest["files"][name] = entry
        return entry

    def commit(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest)


class BundleUpdate(GraphHandover):
    """Adds files to an existing bundle with the same interface as ``BundleWriter``.

    The bundle folder is locked for the whole update (a second resnet-deploy changing the same bundle is
    refused with one line). New files are written into ``path``, a hidden staging folder inside the bundle; on
    success they are moved into the bundle and the manifest is replaced last; on failure the staging folder is
    removed and the bundle is unchanged. Replacing a file the bundle already has needs ``force``.
    """

    def __init__(self, bundle: "str | Path", force: bool = False):
        self.out = Path(bundle).absolute()
        self.manifest = read_manifest(self.out)
        self.force = force
        self.path: Path | None = None
        self._lock = self._stage = None

    def __enter__(self) -> "BundleUpdate":
        busy = f"bundle {str(self.out)!r} is being changed by another resnet-deploy process: wait for it to finish"
        self._lock = locked(self.out, blocking=False, busy=busy)
        self._lock.__enter__()
        try:
            self.manifest = read_manifest(self.out)  # as it is now, under the lock
            self._stage = StagedFiles(self.out, self.force, "bundle file").__enter__()
            self.path = self._stage.path
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def add_file(self, name: str, digest: "tuple[int, str] | None" = None, **info) -> dict:
        """Record a file written to ``path / name``; it moves into the bundle when the update succeeds."""
        if (self.out / name).exists() and not self.force:
            raise UserError(f"{str(self.out / name)!r} already exists: pass --force to replace it")
        entry = file_entry(self.path / name, digest, **info)
        self.manifest["files"][name] = entry
        self._stage.keep(name)
        return entry

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._stage.__exit__(exc_type, exc, tb)
            if exc_type is None:
                write_json_atomic(self.out / MANIFEST, self.manifest)
        finally:
            self._lock.__exit__(None, None, None)


def name_problem(name: str) -> str | None:
    """Why manifest entry ``name`` is not a plain relative path inside a bundle (None when it is): the same
    names pip and ``tarfile``'s data filter refuse, and no backslash or drive letter for a Windows reader."""
    if not name:
        return "it is empty"
    if "\\" in name or "\0" in name:
        return "it has a backslash or NUL character"
    if name.startswith("/") or PureWindowsPath(name).drive:
        return "it is an absolute path or has a drive letter"
    parts = name.split("/")
    if ".." in parts:
        return "it has a '..' component"
    if "" in parts or "." in parts:
        return "it has an empty or '.' component"
    return None


def bundle_file(bundle_dir: "str | Path", name: str) -> Path:
    """``bundle_dir / name`` for a manifest entry, refused (``UserError``, exit 2) unless ``name`` is a plain
    relative path that stays inside the bundle folder with symlinks resolved. Bundles travel between machines
    and teams: their manifest must not make us read, hash or copy a file outside them."""
    bundle_dir = Path(bundle_dir)
    why = name_problem(name)
    if why is None:
        root, real = os.path.realpath(bundle_dir), os.path.realpath(bundle_dir / name)  # lstat/readlink only
        if os.path.commonpath([root, real]) != root:
            why = f"through a symlink it leads to {real!r}, outside the bundle"
    if why:
        raise UserError(f"manifest entry {name!r} in bundle {str(bundle_dir)!r} is not a bundle file name: {why} "
                        "(a bundle lists only plain relative paths inside its folder)")
    return bundle_dir / name


def file_problem(path: Path, entry: dict | None) -> str | None:
    """Why ``path`` does not match its manifest ``entry`` (missing, size or sha256), None when it does."""
    if entry is None:
        return "not listed in the manifest"
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry.get("size"):
        return f"size {path.stat().st_size} != manifest {entry.get('size')}"
    if sha256_file(path) != entry.get("sha256"):
        return "sha256 mismatch"
    return None


def verified(bundle_dir: "str | Path", manifest: dict, name: str) -> Path:
    """The path of bundle file ``name`` after checking it (and its companion files: external ONNX weights, IR
    weights) against the manifest;
    a missing or altered file is a one-line ``CheckFailed`` (exit 1) that points to ``resnet-deploy info``."""
    bundle_dir = Path(bundle_dir)
    files = manifest.get("files", {})
    for n in [name] + [c for c in companions(name) if c in files]:
        problem = file_problem(bundle_file(bundle_dir, n), files.get(n))
        if problem:
            raise CheckFailed(f"{n} in bundle {str(bundle_dir)!r} failed verification ({problem}): run "
                              f"resnet-deploy info {bundle_dir} to check every file")
    return bundle_dir / name


def locate(bundle, name: str) -> Path:
    """Where a bundle file is now: staged in ``bundle.path`` during a write/update (just written), else in the
    bundle folder, checked against the manifest before anyone loads it."""
    staged = bundle.path / name
    return staged if staged.exists() else verified(bundle.out, bundle.manifest, name)


def read_manifest(bundle: "str | Path") -> dict:
    """Load and minimally validate ``manifest.json`` of a bundle folder; every file it lists must be a
    ``bundle_file`` (inside the bundle), else ``UserError`` before anything else is read."""
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
    if not isinstance(data.get("files", {}), dict):
        raise UserError(f"{str(path)!r} is not a resnet-deploy manifest: its 'files' is not a table of names")
    for name in data.get("files", {}):
        bundle_file(bundle, name)  # before any command opens, hashes or copies one
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
    if isinstance(bundle, (BundleWriter, BundleUpdate)):
        manifest, where, label = bundle.manifest, lambda n: locate(bundle, n), bundle.out
    else:
        manifest = read_manifest(bundle)
        where, label = (lambda n: verified(bundle, manifest, n)), bundle
    names = find_artifacts(manifest, kind=Kind.EAGER)
    if not names:
        raise UserError(f"bundle {str(label)!r} has no eager reference ({EAGER_PROGRAM}): re-export it")
    return load_exported_program(where(names[0]))


def verify(bundle: "str | Path") -> list[str]:
    """Re-check every file's size and sha256 against the manifest; returns the problems (empty when all good)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    problems = []
    for name, entry in manifest.get("files", {}).items():
        problem = file_problem(bundle_file(bundle, name), entry)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def load_exported_program(path: "str | Path"):
    """Load a ``.pt2`` saved by ``save_exported_program``; returns a callable ``nn.Module``."""
    import torch

    return torch.export.load(str(path)).module()
