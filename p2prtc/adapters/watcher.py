"""Watch a set of files for saves and deletions: inotify on Linux, watchfiles elsewhere.

Editors save in two ways: writing the file in place, or writing a temp file and renaming it
over the target (Jupyter, vim, VS Code). A rename-over replaces the file's inode, so watching
the file itself would stop after the first save; we watch the files' folders (not
recursively) and keep only events for the watched files.

Each batch of raw changes becomes at most one event per watched file, and its kind comes
from the disk at that moment: CHANGED if the file exists, DELETED if not. A batch can hold
"deleted" and "added" for one path in no particular order (a rename-over, vim's backup
dance), so the final state is the only reliable answer. Consumers must be idempotent: an
event may repeat (e.g. while the watch restarts after `add`) and means "look at the file".

A DELETED event also says where the file went when it was renamed within its folder
(`moved_to`), as inotify tells it (the rename's two events share a cookie). It is a hint,
not a verdict: editors rename the file away and write a new one in its place as part of a
save (vim's backup), so the consumer decides once the dust settles. The watchfiles fallback
sees a rename as a file gone and another come, and gives no hint; nor does a move to
another folder (the new name is out of sight unless that folder is watched too, and
following it only then would make the rule depend on what else is shared).

Latency versus idle cost. On Linux the folders are watched with inotify directly
(adapters/inotify.py): the event loop reads a save's event as the kernel queues it, about
a millisecond after the editor's rename or close, and nothing runs while nothing changes.
Elsewhere (or if inotify cannot be set up) watchfiles' thread wakes every `step_ms` (about
1% CPU of one core at 5 ms) and reports a batch once no new change arrived for a step, at
the latest after `debounce_ms`.

Parts: watched_files.py (the files, and what a batch of changes means for them: the events),
watches.py (one running inotify or watchfiles watch). This module owns the watcher itself:
its life, the set of folders its watch covers, and the queue of events.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from p2prtc.adapters import inotify
from p2prtc.adapters.watched_files import (
    ChangeKind,
    FileEvent,
    WatchedFiles,
    WatchedFolderMissing,
)
from p2prtc.adapters.watches import InotifyWatch, PollingWatch, Watch

__all__ = [
    "DEFAULT_DEBOUNCE_MS",
    "DEFAULT_STEP_MS",
    "ChangeKind",
    "FileEvent",
    "FileWatcher",
    "WatchedFolderMissing",
    "WatcherState",
]

logger = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_MS = 20
DEFAULT_STEP_MS = 5


class WatcherState(enum.Enum):
    """Lifecycle of a FileWatcher."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class FileWatcher:
    """Async iterator of FileEvents for a changing set of files.

    Use `async with FileWatcher(paths) as watcher: async for event in watcher: ...`, or
    `await start()` / `await close()`. Iteration ends after `close()`. If the watch itself
    fails (e.g. a folder vanished as it started), iteration raises that error; close the
    watcher and make a new one.
    """

    def __init__(
        self,
        paths: Iterable[Path] = (),
        *,
        debounce_ms: int = DEFAULT_DEBOUNCE_MS,
        step_ms: int = DEFAULT_STEP_MS,
        use_inotify: bool = True,
    ) -> None:
        """`use_inotify=False` polls with watchfiles even where inotify is available."""
        self._use_inotify = use_inotify and inotify.available()
        self._debounce_ms = debounce_ms
        self._step_ms = step_ms
        self._files = WatchedFiles()
        for path in paths:
            self._files.add(path)
        self._events: asyncio.Queue[FileEvent | BaseException | None] = asyncio.Queue()
        self._watch: Watch | None = None
        self._state = WatcherState.NEW

    def _set_state(self, new: WatcherState) -> None:
        logger.debug("file watcher %s -> %s", self._state.value, new.value)
        self._state = new

    @property
    def paths(self) -> set[Path]:
        """The watched files, as given."""
        return self._files.given()

    async def start(self) -> None:
        """Start watching; events for changes made after this returns are delivered."""
        if self._state is not WatcherState.NEW:
            raise RuntimeError(f"cannot start a {self._state.value} file watcher")
        self._set_state(WatcherState.RUNNING)
        await self._rewatch()

    async def add(self, path: Path) -> None:
        """Watch one more file (its folder must exist)."""
        self._files.add(path)
        await self._rewatch()

    async def remove(self, path: Path) -> None:
        """Stop watching a file; no event for it is delivered after this returns."""
        self._files.remove(path)
        await self._rewatch()

    async def close(self) -> None:
        """Stop watching and end the iteration."""
        if self._state is WatcherState.CLOSED:
            return
        self._set_state(WatcherState.CLOSED)
        await self._replace_watch(None)
        self._events.put_nowait(None)

    async def _rewatch(self) -> None:
        """Make the running watch cover exactly the folders of the watched files."""
        if self._state is not WatcherState.RUNNING:
            return
        folders = self._files.folders()
        if self._watch is not None and self._watch.folders == folders:
            return
        await self._replace_watch(await self._spawn(folders) if folders else None)

    async def _replace_watch(self, new: Watch | None) -> None:
        # The new watch is armed before the old one stops, so no change falls in between.
        old, self._watch = self._watch, new
        if old is not None:
            await old.close()

    async def _spawn(self, folders: frozenset[Path]) -> Watch:
        deliver = self._events.put_nowait
        if self._use_inotify:
            try:
                return InotifyWatch.start(folders, self._files, deliver)
            except OSError as exc:  # e.g. the user's inotify watch limit: poll instead
                logger.warning("inotify unavailable (%s): watching with watchfiles", exc)
        return await PollingWatch.start(
            folders, self._files, deliver, debounce_ms=self._debounce_ms, step_ms=self._step_ms
        )

    def __aiter__(self) -> FileWatcher:
        return self

    async def __anext__(self) -> FileEvent:
        while True:
            item = await self._events.get()
            if item is None:
                self._events.put_nowait(None)  # stays ended for any later iteration
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                raise item
            # Skip events queued before their file was removed from the watch.
            if item.path in self._files:
                return item

    async def __aenter__(self) -> FileWatcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
