"""How the daemon's doc enters a room's doc when the link attaches (one history, not two).

A room that Jupyter loaded from the file has a history of its own: the same text as the
daemon's doc, but other Y items, so merging both would double every cell. That room's
content gives way to the daemon's instead. A room that was attached before (its daemon went
away) shares the daemon's history already: the daemon's missing part is simply applied.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map

logger = logging.getLogger(__name__)

_META_KEYS = ("nbformat", "nbformat_minor", "metadata")


def merge_daemon_part(room: Any, update: bytes, path: Path, *, replaces_own: bool) -> None:
    """Apply the daemon's ``update`` to the room's doc (in the caller's transaction).

    ``replaces_own``: the room has Jupyter's own history (it was stock), which is cleared
    first. The local path of the room never enters the shared state."""
    document = room._document
    if replaces_own and _has_content(room.ydoc):
        logger.info("room %s takes the shared doc of %s", room.room_id, path)
        _clear_own_content(document)
    room.ydoc.apply_update(update)
    if replaces_own:
        _restate_meta(document._ymeta, update)
    state = document._ystate
    if "path" in state:
        del state["path"]


def _has_content(doc: Doc[Any]) -> bool:
    return len(doc.get("cells", type=Array)) > 0 or len(doc.get("meta", type=Map)) > 0


def _clear_own_content(document: Any) -> None:
    """The room was loaded from the file by Jupyter (its own history): it gives way to the
    daemon's doc, which holds the same file and whatever was saved since."""
    del document._ycells[:]
    meta = document._ymeta
    for key in list(meta.keys()):
        del meta[key]


def _restate_meta(meta: Map[Any], update: bytes) -> None:
    """Set the notebook's top-level values again, after both sides' entries: a map key set
    concurrently by the room and the daemon must not end up held by the deleted one.

    Y keeps, of two concurrent entries of a key, the one of the higher client id: when that
    is the room's deleted entry, the key reads as missing, and its value is taken from the
    daemon's part (else the daemon, merging the room's history, would lose it too)."""
    daemon_meta: dict[str, Any] | None = None
    for key in _META_KEYS:
        if key in meta:
            value = meta[key]
        else:
            daemon_meta = _meta_of(update) if daemon_meta is None else daemon_meta
            if key not in daemon_meta:
                continue
            value = daemon_meta[key]
        meta[key] = _shared(value)


def _meta_of(update: bytes) -> dict[str, Any]:
    scratch: Doc[Any] = Doc()
    scratch.apply_update(update)
    values: dict[str, Any] = scratch.get("meta", type=Map).to_py() or {}
    return values


def _shared(value: Any) -> Any:
    """A new entry for ``value`` (a nested map is written anew, not moved)."""
    if isinstance(value, Map):
        return Map(value.to_py())
    if isinstance(value, dict):
        return Map(value)
    return value
