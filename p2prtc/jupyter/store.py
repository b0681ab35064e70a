"""The hook a collaboration room consults before loading its file: ``YDocExtension.ystore_class``.

A room of a shared notebook takes its doc from the daemon here (``apply_updates`` runs before
the room would read the file) and stays attached to it; every other room gets the stock
SQLite store of jupyter-collaboration, untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jupyter_server_ydoc.stores import SQLiteYStore
from pycrdt import Doc

from p2prtc import paths
from p2prtc.jupyter.link import RoomLinkClient

logger = logging.getLogger(__name__)


class Server:
    """The Jupyter server this extension was loaded into (set by the extension loader)."""

    app: Any = None


def find_room(ydoc: Doc[Any]) -> Any:
    """The collaboration room whose doc is ``ydoc``, if any."""
    apps = Server.app.extension_manager.extension_apps if Server.app is not None else {}
    for group in apps.values():
        for app in group:
            websocket_server = getattr(app, "ywebsocket_server", None)
            rooms = getattr(websocket_server, "rooms", {})
            for room in list(rooms.values()):
                if getattr(room, "ydoc", None) is ydoc:
                    return room
    return None


class P2PYStore(SQLiteYStore):  # type: ignore[misc]  # untyped base (jupyter_server_ydoc)
    """The stock store, plus: a shared notebook's room is attached to the p2prtc daemon."""

    link: RoomLinkClient | None = None

    async def apply_updates(self, ydoc: Doc[Any]) -> None:
        room = find_room(ydoc)
        if room is not None and getattr(room, "file_type", None) == "notebook":
            path = Path(Server.app.root_dir, room._file.path).resolve()
            self.link = RoomLinkClient(room, path, paths.home())
            attached = await self.link.adopt()
            self.link.watch()
            if attached:
                logger.info("room %s is attached to the p2prtc share of %s", room.room_id, path)
                return
        await super().apply_updates(ydoc)
