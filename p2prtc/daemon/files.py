"""Reading and atomically writing the user's notebook file."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from p2prtc.errors import P2PError
from p2prtc.paths import fsync_dir

logger = logging.getLogger(__name__)


class FileUnreadable(P2PError):
    """The notebook file cannot be read."""


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


def atomic_write(path: Path, data: bytes, *, unless_changed_from: Signature | None) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new, never half.

    A temp file in the same folder is written, fsynced and renamed over the target; the
    folder is fsynced so the rename survives a crash. The file keeps its permission bits.
    If the file no longer has the signature it had when the caller read it (an editor saved
    meanwhile), nothing is replaced and FileChangedMeanwhile is raised: that save must be
    read first. (A save landing between this check and the rename can still be lost; the
    window is a few system calls, where it used to be the whole render.)
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
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise FileWriteFailed(f"{path}: {exc.strerror}") from None


def _mode_of(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o644


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
