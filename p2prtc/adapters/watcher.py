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
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from watchfiles import awatch

from p2prtc.adapters import inotify
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

DEFAULT_DEBOUNCE_MS = 20
DEFAULT_STEP_MS = 5


class WatchedFolderMissing(P2PError):
    """The folder of a file to watch does not exist."""


class ChangeKind(enum.Enum):
    """What happened to a watched file."""

    CHANGED = "changed"  # written, created or replaced: read it again
    DELETED = "deleted"  # gone (deleted or renamed away)


@dataclass(frozen=True)
class FileEvent:
    """A watched file changed; `path` is the path as given to the watcher.

    `moved_to`: for a DELETED file renamed within its folder (inotify only), its new name,
    spelled like `path`.
    """

    path: Path
    kind: ChangeKind
    moved_to: Path | None = None


class WatcherState(enum.Enum):
    """Lifecycle of a FileWatcher."""

    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


class _Watch(Protocol):
    """One running watch over a fixed set of folders."""

    @property
    def folders(self) -> frozenset[Path]: ...

    async def close(self) -> None: ...


@dataclass
class _InotifyWatch:
    """One inotify instance over a fixed set of folders, read by the event loop."""

    folders: frozenset[Path]
    inotify: inotify.Inotify

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.inotify.fd)
        self.inotify.close()


@dataclass
class _FolderWatch:
    """One running awatch over a fixed set of folders."""

    folders: frozenset[Path]
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def close(self) -> None:
        # The watch thread sees the event within one step and awatch then returns.
        self.stop.set()
        await self.task


def _normalised(path: Path) -> Path:
    """The path as watchfiles reports it: resolved folder (we watch that), same file name."""
    return path.absolute().parent.resolve() / path.name


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
        # Normalised path (as reported by watchfiles) -> path as the caller gave it.
        self._files: dict[Path, Path] = {}
        for path in paths:
            self._track(path)
        self._events: asyncio.Queue[FileEvent | BaseException | None] = asyncio.Queue()
        self._watch: _Watch | None = None
        self._state = WatcherState.NEW

    def _set_state(self, new: WatcherState) -> None:
        logger.debug("file watcher %s -> %s", self._state.value, new.value)
        self._state = new

    def _track(self, path: Path) -> None:
        normalised = _normalised(path)
        if not normalised.parent.is_dir():
            raise WatchedFolderMissing(str(path.parent))
        self._files[normalised] = path

    @property
    def paths(self) -> set[Path]:
        """The watched files, as given."""
        return set(self._files.values())

    async def start(self) -> None:
        """Start watching; events for changes made after this returns are delivered."""
        if self._state is not WatcherState.NEW:
            raise RuntimeError(f"cannot start a {self._state.value} file watcher")
        self._set_state(WatcherState.RUNNING)
        await self._rewatch()

    async def add(self, path: Path) -> None:
        """Watch one more file (its folder must exist)."""
        self._track(path)
        await self._rewatch()

    async def remove(self, path: Path) -> None:
        """Stop watching a file; no event for it is delivered after this returns."""
        self._files.pop(_normalised(path), None)
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
        folders = frozenset(path.parent for path in self._files)
        if self._watch is not None and self._watch.folders == folders:
            return
        await self._replace_watch(await self._spawn(folders) if folders else None)

    async def _replace_watch(self, new: _Watch | None) -> None:
        # The new watch is armed before the old one stops, so no change falls in between.
        old, self._watch = self._watch, new
        if old is not None:
            await old.close()

    async def _spawn(self, folders: frozenset[Path]) -> _Watch:
        if self._use_inotify:
            try:
                return self._watch_with_inotify(folders)
            except OSError as exc:  # e.g. the user's inotify watch limit: poll instead
                logger.warning("inotify unavailable (%s): watching with watchfiles", exc)
        return await self._watch_with_watchfiles(folders)

    def _watch_with_inotify(self, folders: frozenset[Path]) -> _InotifyWatch:
        watch = _InotifyWatch(folders, inotify.Inotify(folders))
        asyncio.get_running_loop().add_reader(watch.inotify.fd, self._read_inotify, watch)
        logger.debug("watching folders %s with inotify", sorted(map(str, folders)))
        return watch

    def _read_inotify(self, watch: _InotifyWatch) -> None:
        try:
            changes = watch.inotify.read()
        except inotify.Overflow:  # events were lost: look at every file
            changes = inotify.Changes(set(self._files))
        except inotify.FolderGone as gone:
            # Said, not silent: its files read as gone, and watching resumes if the
            # folder comes back when the set of files is next changed.
            logger.warning("folder %s was deleted or moved: its files are not watched", gone)
            changes = inotify.Changes({path for path in self._files if path.parent == gone.folder})
        for event in self._events_for(changes.paths, changes.renames):
            self._events.put_nowait(event)

    async def _watch_with_watchfiles(self, folders: frozenset[Path]) -> _FolderWatch:
        stop = asyncio.Event()
        task = asyncio.create_task(self._pump(folders, stop))
        # awatch creates its inotify/kqueue watches synchronously on its first step, before
        # any await; letting the new task run that step once means the watch is armed here.
        await asyncio.sleep(0)
        logger.debug("watching folders %s", sorted(map(str, folders)))
        return _FolderWatch(folders, stop, task)

    async def _pump(self, folders: frozenset[Path], stop: asyncio.Event) -> None:
        try:
            async for changes in awatch(
                *folders,
                debounce=self._debounce_ms,
                step=self._step_ms,
                stop_event=stop,
                recursive=False,
                # The default filter drops e.g. anything under .git or node_modules; we want
                # exactly our files, wherever they are, and select them in _events_for.
                watch_filter=None,
            ):
                for event in self._events_for({Path(raw) for _, raw in changes}):
                    self._events.put_nowait(event)
        except Exception as exc:
            # E.g. a folder removed just before the watch started: the consumer must know.
            logger.warning("file watch of %s failed: %s", sorted(map(str, folders)), exc)
            self._events.put_nowait(exc)

    def _events_for(
        self, paths: set[Path], renames: dict[Path, Path] | None = None
    ) -> list[FileEvent]:
        """One event per watched file among `paths` (and the old names of `renames`)."""
        renames = renames or {}
        touched = (paths | renames.keys()) & self._files.keys()
        return [self._event_for(path, renames.get(path)) for path in sorted(touched)]

    def _event_for(self, path: Path, renamed_to: Path | None) -> FileEvent:
        given = self._files[path]
        if path.exists():
            return FileEvent(given, ChangeKind.CHANGED)
        in_its_folder = renamed_to is not None and renamed_to.parent == path.parent
        moved_to = given.with_name(renamed_to.name) if renamed_to and in_its_folder else None
        return FileEvent(given, ChangeKind.DELETED, moved_to)

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
            if _normalised(item.path) in self._files:
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
