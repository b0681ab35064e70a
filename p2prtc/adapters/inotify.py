"""Linux inotify through libc (ctypes): which files in a set of folders were saved or went,
and which were renamed (a rename's two events share a cookie: the kernel says which name
became which, where a poller sees only a file gone and another come).

The watcher's fast path (adapters/watcher.py): the kernel queues an event as a save
completes and the event loop reads it at once, so a save is seen within about a
millisecond, with nothing polling while nothing happens. Only completed changes are
reported: a file closed after writing, renamed in or out, or deleted, and a folder made
where a watched file was. A file being written (IN_MODIFY) or just created empty
(IN_CREATE of a file) is not, so a reader never sees half a save when the writer closes or
renames the file at the end, as editors do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000  # the watch is gone (its folder deleted or unmounted)
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCHED = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_DELETE
    | IN_CREATE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_FOLDER_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows
_READ_SIZE = 64 * 1024
_UNPAIRED_MOVES_KEPT = 64


class Overflow(Exception):
    """The kernel dropped events (its queue was full): every file must be looked at."""


class FolderGone(Exception):
    """A watched folder was deleted or moved away: nothing in it is watched anymore."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self.folder = folder


@dataclass
class Changes:
    """What one read found: the paths changed, and the renames among them (old -> new)."""

    paths: set[Path] = field(default_factory=set)
    renames: dict[Path, Path] = field(default_factory=dict)


def available() -> bool:
    """Whether inotify can be used here (Linux with a C library that has it)."""
    return sys.platform.startswith("linux") and _libc() is not None


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    return libc if hasattr(libc, "inotify_init1") else None


class Inotify:
    """One inotify instance watching folders (not recursively); a non-blocking fd."""

    def __init__(self, folders: frozenset[Path]) -> None:
        libc = _libc()
        if libc is None:
            raise OSError(errno.ENOSYS, "inotify is not available")
        self._libc = libc
        self.fd = self._checked(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        self._folders: dict[int, Path] = {}
        self._moved_from: dict[int, Path] = {}  # rename cookie -> the name it left
        try:
            for folder in folders:
                wd = libc.inotify_add_watch(self.fd, os.fsencode(folder), WATCHED | IN_ONLYDIR)
                self._folders[self._checked(wd, str(folder))] = folder
        except OSError:
            os.close(self.fd)
            raise

    def _checked(self, result: int, what: str) -> int:
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")
        return result

    def read(self) -> Changes:
        """The changes since the last read (none when nothing is queued)."""
        changes = Changes()
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return changes
            self._add_changes(data, changes)

    def _add_changes(self, data: bytes, changes: Changes) -> None:
        offset = 0
        while offset < len(data):
            wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].rstrip(b"\0")
            offset += length
            if mask & IN_Q_OVERFLOW:
                raise Overflow()
            folder = self._folders.get(wd)
            if folder is not None and mask & _FOLDER_GONE:
                raise FolderGone(folder)
            if mask & IN_CREATE and not mask & IN_ISDIR:
                continue  # a file just created is empty: its close-after-write will come
            if folder is None or not name:
                continue
            path = folder / os.fsdecode(name)
            changes.paths.add(path)
            if mask & IN_MOVED_FROM and not mask & IN_ISDIR:
                self._remember_moved_from(cookie, path)
            elif mask & IN_MOVED_TO and cookie in self._moved_from:
                changes.renames[self._moved_from.pop(cookie)] = path

    def _remember_moved_from(self, cookie: int, path: Path) -> None:
        # One rename(2) queues its two events back to back, but a read may fall between
        # them: the "moved from" waits for its pair. Those never paired (moved to a folder
        # not watched) are forgotten, oldest first.
        self._moved_from[cookie] = path
        if len(self._moved_from) > _UNPAIRED_MOVES_KEPT:
            del self._moved_from[next(iter(self._moved_from))]

    def close(self) -> None:
        os.close(self.fd)
