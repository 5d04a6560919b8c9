"""File primitives every writer shares: checksums, atomic JSON, no-replace renames, staged folders, locks.

Nothing here knows what a bundle is. The rule it enforces: a user's file or folder is never replaced without
``force``, even when two processes race for the same name. A final rename refuses an existing target
(``renameat2(RENAME_NOREPLACE)`` where the kernel and file system offer it; elsewhere a lock beside the
target serialises the check and the rename), so of two concurrent writers one wins and the other gets the
one-line "exists: pass --force" error.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def sha256_file(path: "str | Path", chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: "str | Path", data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: "str | Path", data: dict) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode())


def exists_error(what: str, path: Path) -> UserError:
    """The one message for an output that is already there."""
    return UserError(f"{what} {str(path)!r} exists and is not empty: pass --force to replace it")


def _renameat2(src: Path, dst: Path) -> bool:
    """Rename refusing an existing ``dst``; False when the kernel or file system cannot do it atomically."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if fn(_AT_FDCWD, os.fsencode(str(src)), _AT_FDCWD, os.fsencode(str(dst)), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EEXIST, errno.ENOTEMPTY):
        raise FileExistsError(err, os.strerror(err), str(dst))
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(src))


@contextlib.contextmanager
def locked(path: "str | Path", blocking: bool = True, busy: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (a folder or file; a lock file is created if missing).

    Non-blocking, a lock held elsewhere raises ``UserError(busy)``.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UserError(busy or f"{str(path)!r} is locked by another process") from None
        yield
    finally:
        os.close(fd)


def rename_no_replace(src: "str | Path", dst: "str | Path") -> None:
    """Rename ``src`` (file or folder) to ``dst``; ``FileExistsError`` when ``dst`` exists, even under a race."""
    src, dst = Path(src), Path(dst)
    if _renameat2(src, dst):
        return
    with locked(dst.parent / f".{dst.name}.lock"):  # no atomic primitive here: serialise check and rename
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)


def move_into_place(src: "str | Path", dst: "str | Path", force: bool, what: str = "--out") -> None:
    """Move a fully written ``src`` (file or folder) to ``dst``, a sibling.

    Without ``force`` an existing ``dst`` is refused (an empty folder the user made is taken over); with it
    the old ``dst`` is renamed away first and removed after the new one is in place.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        with contextlib.suppress(OSError):  # someone may fill it meanwhile: then the rename below refuses
            dst.rmdir()
    elif force and os.path.lexists(dst):
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.rename(dst, old)
    try:
        rename_no_replace(src, dst)
    except FileExistsError:
        raise exists_error(what, dst) from None
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def check_output(out: "str | Path", force: bool, what: str = "--out") -> Path:
    """Refuse an existing non-empty folder or a file without ``force``, a file where a folder is wanted, or an
    unwritable parent; returns the absolute path. The final ``move_into_place`` checks again, atomically."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"{what} {str(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise exists_error(what, out)
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # a real probe: os.access says yes to root even on read-only or virtual file systems
        os.rmdir(tempfile.mkdtemp(prefix=".resnet-deploy-probe-", dir=parent))
    except OSError as e:
        raise UserError(f"{what} {str(out)!r} is not writable ({str(parent)!r}: {e.strerror or e})") from None
    return out


def _make_staging_dir(parent: "str | Path", prefix: str) -> Path:
    """A new, uniquely named folder in ``parent`` with the mode ``mkdir`` gives (0o777 less the umask, plus any
    default ACL), not ``mkdtemp``'s private 0o700: a staged folder is renamed into place as it is, and a Triton
    server or a service running as another user must be able to read a bundle or repository. The kernel applies
    the umask, so it is never read (reading it means setting it, which races with other threads)."""
    parent = Path(parent)
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary folder name", str(parent))


class StagedDir:
    """A hidden temporary folder beside ``out``: write into ``path``; on success it is moved to ``out``
    (``move_into_place``), on failure or Ctrl-C it is removed and nothing is left behind."""

    def __init__(self, out: "str | Path", force: bool = False, what: str = "--out"):
        self.out = check_output(out, force, what)
        self.force, self.what = force, what
        self.path: Path | None = None

    def __enter__(self) -> "StagedDir":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = _make_staging_dir(self.out.parent, f".{self.out.name}.tmp-")
        except OSError as e:
            raise UserError(f"{self.what} {str(self.out)!r} is not writable: {e.strerror or e}") from None
        return self

    def commit(self) -> None:
        """Hook for subclasses: last writes into ``path`` before the move."""

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        try:
            self.commit()
            move_into_place(self.path, self.out, self.force, self.what)
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise


def write_file_no_replace(src: "str | Path", dst: "str | Path", force: bool, what: str = "output") -> None:
    """Move the written file ``src`` to ``dst``: replaces only with ``force``, refuses a race without it."""
    if force:
        os.replace(src, dst)
        return
    try:
        rename_no_replace(src, dst)
    except FileExistsError:
        raise UserError(f"{what} {str(dst)!r} exists: pass --force to replace it") from None


class StagedFiles:
    """Files written into a hidden folder inside ``folder`` (``path``), then moved into ``folder`` one by one in
    the order given to ``keep`` (put the file that makes the set usable last). Without ``force`` an existing
    file is refused, even one that appeared meanwhile; on failure the staging folder is removed."""

    def __init__(self, folder: "str | Path", force: bool = False, what: str = "output"):
        self.folder, self.force, self.what = Path(folder), force, what
        self.path: Path | None = None
        self._keep: list[str] = []

    def __enter__(self) -> "StagedFiles":
        self.path = _make_staging_dir(self.folder, ".stage-")
        return self

    def keep(self, *names: str) -> None:
        """Move these files (written under ``path``) into the folder when the block succeeds, in this order."""
        self._keep.extend(n for n in names if n not in self._keep)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for name in self._keep:
                    write_file_no_replace(self.path / name, self.folder / name, self.force, self.what)
        finally:
            shutil.rmtree(self.path, ignore_errors=True)
