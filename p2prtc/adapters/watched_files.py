"""The files a watcher follows, and what a batch of raw changes means for them.

Each file is known as the caller gave it and as the disk reports it (resolved folder, same
name). A batch of changes becomes at most one event per watched file, its kind from the
disk at that moment: CHANGED if the file exists, DELETED if not (with where it went, when
it was renamed within its folder). Part of the watcher adapter (adapters/watcher.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from p2prtc.errors import P2PError


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


def normalised(path: Path) -> Path:
    """The path as watchfiles reports it: resolved folder (we watch that), same file name."""
    return path.absolute().parent.resolve() / path.name


class WatchedFiles:
    """The watched files: normalised path (as reported) -> path as the caller gave it."""

    def __init__(self) -> None:
        self._files: dict[Path, Path] = {}

    def add(self, path: Path) -> None:
        """Follow ``path``; raises WatchedFolderMissing if its folder does not exist."""
        reported = normalised(path)
        if not reported.parent.is_dir():
            raise WatchedFolderMissing(str(path.parent))
        self._files[reported] = path

    def remove(self, path: Path) -> None:
        self._files.pop(normalised(path), None)

    def __contains__(self, path: Path) -> bool:
        """Whether ``path`` (as given or as reported) is watched."""
        return normalised(path) in self._files

    def given(self) -> set[Path]:
        """The watched files, as given."""
        return set(self._files.values())

    def reported(self, folder: Path | None = None) -> set[Path]:
        """The watched files as reported (those in ``folder`` only, if given)."""
        return {path for path in self._files if folder is None or path.parent == folder}

    def folders(self) -> frozenset[Path]:
        """The folders to watch: those of the watched files, as reported."""
        return frozenset(path.parent for path in self._files)

    def events_for(
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
