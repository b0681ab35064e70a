"""One running watch over a fixed set of folders: inotify read by the event loop
(adapters/inotify.py), or watchfiles' polling thread where inotify cannot be used.

Either turns the raw changes it sees into events for the watched files (watched_files.py)
and hands them to ``deliver``, as does a failure of the watch itself. `FileWatcher`
(adapters/watcher.py) replaces its watch whenever the set of folders changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchfiles import awatch

from p2prtc.adapters import inotify
from p2prtc.adapters.watched_files import FileEvent, WatchedFiles

logger = logging.getLogger(__name__)

# An event for a watched file, or the error that ended the watch.
Deliver = Callable[[FileEvent | BaseException], None]


class Watch(Protocol):
    """One running watch over a fixed set of folders."""

    @property
    def folders(self) -> frozenset[Path]: ...

    async def close(self) -> None: ...


@dataclass
class InotifyWatch:
    """One inotify instance over a fixed set of folders, read by the event loop."""

    folders: frozenset[Path]
    inotify: inotify.Inotify
    files: WatchedFiles
    deliver: Deliver

    @classmethod
    def start(cls, folders: frozenset[Path], files: WatchedFiles, deliver: Deliver) -> InotifyWatch:
        """Watch ``folders`` from now on; raises OSError if inotify cannot be set up."""
        watch = cls(folders, inotify.Inotify(folders), files, deliver)
        asyncio.get_running_loop().add_reader(watch.inotify.fd, watch._read)
        logger.debug("watching folders %s with inotify", sorted(map(str, folders)))
        return watch

    def _read(self) -> None:
        try:
            changes = self.inotify.read()
        except inotify.Overflow:  # events were lost: look at every file
            changes = inotify.Changes(self.files.reported())
        except inotify.FolderGone as gone:
            # Said, not silent: its files read as gone, and watching resumes if the
            # folder comes back when the set of files is next changed.
            logger.warning("folder %s was deleted or moved: its files are not watched", gone)
            changes = inotify.Changes(self.files.reported(gone.folder))
        for event in self.files.events_for(changes.paths, changes.renames):
            self.deliver(event)

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.inotify.fd)
        self.inotify.close()


@dataclass
class PollingWatch:
    """One running awatch (watchfiles) over a fixed set of folders."""

    folders: frozenset[Path]
    stop: asyncio.Event
    task: asyncio.Task[None]

    @classmethod
    async def start(
        cls,
        folders: frozenset[Path],
        files: WatchedFiles,
        deliver: Deliver,
        *,
        debounce_ms: int,
        step_ms: int,
    ) -> PollingWatch:
        """Watch ``folders`` from now on: a batch is reported once no new change arrived
        for ``step_ms``, at the latest after ``debounce_ms``."""
        stop = asyncio.Event()
        task = asyncio.create_task(_poll(folders, files, deliver, stop, debounce_ms, step_ms))
        # awatch creates its inotify/kqueue watches synchronously on its first step, before
        # any await; letting the new task run that step once means the watch is armed here.
        await asyncio.sleep(0)
        logger.debug("watching folders %s", sorted(map(str, folders)))
        return cls(folders, stop, task)

    async def close(self) -> None:
        # The watch thread sees the event within one step and awatch then returns.
        self.stop.set()
        await self.task


async def _poll(
    folders: frozenset[Path],
    files: WatchedFiles,
    deliver: Deliver,
    stop: asyncio.Event,
    debounce_ms: int,
    step_ms: int,
) -> None:
    try:
        async for changes in awatch(
            *folders,
            debounce=debounce_ms,
            step=step_ms,
            stop_event=stop,
            recursive=False,
            # The default filter drops e.g. anything under .git or node_modules; we want
            # exactly our files, wherever they are, and select them in events_for.
            watch_filter=None,
        ):
            for event in files.events_for({Path(raw) for _, raw in changes}):
                deliver(event)
    except Exception as exc:
        # E.g. a folder removed just before the watch started: the consumer must know.
        logger.warning("file watch of %s failed: %s", sorted(map(str, folders)), exc)
        deliver(exc)
