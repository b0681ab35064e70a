"""Where a shared file went when it vanished: renamed within its folder, or deleted.

The daemon decides once the dust has settled (a grace after the file went, see
daemon/missing_file.py): editors rename the file away and write a new one in its place as
part of a save, so a rename alone proves nothing. If the old name is still missing then,
its new name is, in this order:

1. the name inotify saw it renamed to (``mv``, a file manager, JupyterLab's rename: the two
   events of one rename(2) share a cookie), if a file is there: the same file, whatever it
   holds now (a save made since is merged like any save);
2. else, as Syncthing detects renames, the one file of the folder that holds the notebook
   exactly as this daemon last wrote or read it (any version the engine keeps whole) and
   appeared at most ``RENAME_WINDOW_S`` before the old name went, or since: an editor's
   "save as" followed by a delete, or a rename the watcher could not pair (the watchfiles
   fallback). Hidden files (editors' temp files) are not candidates; two or more candidates
   are ambiguous, and none is taken.

A file found missing when the daemon starts gets rule 2 with no time limit (it may have
gone any time while the daemon was stopped). Only the file's own folder is looked at: a
file moved to another folder reads as deleted (see docs/reliability.md, "Renamed file").
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from p2prtc.adapters.files import read_file
from p2prtc.core.engine import text_digest
from p2prtc.core.notebook import MAX_NOTEBOOK_BYTES
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# A "save as" may come well before the delete (the user looks at the new file first).
RENAME_WINDOW_S = 10.0
# When a file found missing at start went: any time (the daemon was not watching), so any
# file of the folder, however old, may be its new name if it holds exactly its content.
RENAMED_WHILE_STOPPED = float("-inf")


@dataclass
class Gone:
    """A shared file seen gone: when (wall clock, as file times are), and the new name the
    watcher saw it renamed to, if any (the latest seen wins)."""

    at: float
    moved_to: Path | None = None


def new_name(path: Path, gone: Gone, own_versions: frozenset[bytes]) -> Path | None:
    """The name ``path`` was renamed to within its folder, or None (deleted, for all we know).

    ``own_versions``: the digests of the notebook's texts as the daemon wrote or read them.
    Blocking file IO (a folder's recent files are read): run it in a worker thread.
    """
    if gone.moved_to is not None and gone.moved_to.is_file():
        return gone.moved_to
    matches = [
        candidate
        for candidate in _recent_files(path.parent, since=gone.at - RENAME_WINDOW_S)
        if _holds(candidate, own_versions)
    ]
    if len(matches) > 1:
        names = ", ".join(sorted(match.name for match in matches))
        logger.warning("%s went and %s hold its content: not guessing its new name", path, names)
    return matches[0] if len(matches) == 1 else None


def _recent_files(folder: Path, since: float) -> Iterator[Path]:
    """Regular, visible files of ``folder`` changed (made, renamed) since ``since``, no
    larger than a notebook may be. A rename changes the file's ctime (on Linux)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:  # gone meanwhile
            continue
        if (
            stat.S_ISREG(info.st_mode)
            and info.st_ctime >= since
            and info.st_size <= MAX_NOTEBOOK_BYTES
        ):
            yield Path(entry.path)


def _holds(candidate: Path, own_versions: frozenset[bytes]) -> bool:
    try:
        return text_digest(read_file(candidate, MAX_NOTEBOOK_BYTES)) in own_versions
    except P2PError:  # unreadable, or gone meanwhile
        return False
