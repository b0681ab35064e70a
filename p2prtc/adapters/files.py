"""Reading and atomically writing the user's notebook file."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import secrets
import stat
from pathlib import Path

from p2prtc.errors import ExitCode, P2PError
from p2prtc.paths import fsync_dir

logger = logging.getLogger(__name__)


class FileUnreadable(P2PError):
    """The notebook file cannot be read."""

    exit_code = ExitCode.INVALID_NOTEBOOK


class FileChangedMeanwhile(P2PError):
    """The notebook file changed while the daemon was about to write it."""


# (inode, size, mtime in ns): what tells a file replaced or rewritten since it was read.
Signature = tuple[int, int, int]


def signature_of(path: Path) -> Signature | None:
    """The file's signature now; None when there is no file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class FileWriteFailed(P2PError):
    """The notebook file could not be written; the shared copy is safe and will be retried."""


def read_file(path: Path, max_bytes: int) -> bytes:
    """The file's bytes; a clear error for a missing file, a folder, or no permission.

    Reads at most ``max_bytes + 1`` so a huge file is refused without loading it whole.
    """
    try:
        with path.open("rb") as handle:
            return handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileUnreadable(f"{path} does not exist") from None
    except IsADirectoryError:
        raise FileUnreadable(f"{path} is a folder") from None
    except OSError as exc:
        raise FileUnreadable(f"{path}: {exc.strerror}") from None


def atomic_write(path: Path, data: bytes, *, unless_changed_from: Signature | None) -> bytes | None:
    """Replace ``path`` with ``data`` so readers see the old file or the new, never half.

    A temp file in the same folder is written, fsynced and put in place; the folder is
    fsynced so the rename survives a crash. The file keeps its permission bits.

    ``unless_changed_from`` is the signature of the file the caller read. If the file has
    changed since (an editor saved meanwhile), nothing is replaced: FileChangedMeanwhile.
    A save landing in the last instant, between that check and the rename, is not lost
    either: on Linux the two files are swapped atomically (renameat2 RENAME_EXCHANGE), and
    the displaced file's contents are returned when they are not what the caller read.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.p2prtc-tmp")
    mode = _mode_of(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        if signature_of(path) != unless_changed_from:
            tmp.unlink()
            raise FileChangedMeanwhile(str(path))
        swapped = unless_changed_from is not None and _exchange(tmp, path)
        if not swapped:
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return _displaced(tmp, unless_changed_from, displaced_path(path)) if swapped else None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FileWriteFailed(f"{path}: {exc.strerror}") from None


def displaced_path(path: Path) -> Path:
    """Where a save displaced by a write waits until it is merged: a crash in between must
    not lose it (the caller removes it once merged)."""
    return path.with_name(f".{path.name}.p2prtc-displaced")


def _displaced(old: Path, expected: Signature | None, keep_as: Path) -> bytes | None:
    """The swapped-out file: its bytes if it was not the file the caller read (kept at
    ``keep_as``, durably), else None (removed)."""
    if signature_of(old) == expected:
        old.unlink(missing_ok=True)
        return None
    data = old.read_bytes()
    os.replace(old, keep_as)
    fsync_dir(keep_as.parent)
    return data


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        error = ctypes.get_errno()
        if error in (errno.ENOSYS, errno.EINVAL, errno.ENOENT):
            return False  # no support here (or the file vanished): a plain rename will do
        raise OSError(error, os.strerror(error))
    return True


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


# A notebook the daemon creates (a join) gets the mode an editor of the user would give it:
# 0666 less the umask the daemon was started with (its own umask is 0077, for its state).
_new_file_mode = 0o644


def use_umask_for_new_files(umask: int) -> None:
    global _new_file_mode
    _new_file_mode = 0o666 & ~umask


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _new_file_mode


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
