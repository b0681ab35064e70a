"""p2prtc's Jupyter server extension: collaboration rooms of shared notebooks attach to the daemon.

Enabled automatically once ``p2prtc[jupyter]`` is installed (by the config the package ships
under ``etc/jupyter/jupyter_server_config.d/p2prtc.json``). When it is linked it makes
jupyter-collaboration use ``P2PYStore`` (``YDocExtension.ystore_class``; a store configured by
the user is left alone, and the rooms then stay stock). It finds the daemon through
``P2PRTC_HOME`` (or the default home) and talks to it only over the control socket.
"""

from __future__ import annotations

from typing import Any

from p2prtc.jupyter.store import P2PYStore, Server

# jupyter-collaboration's default store: the one P2PYStore extends.
_STOCK_STORE = "jupyter_server_ydoc.stores.SQLiteYStore"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "p2prtc.jupyter"}]


def _link_jupyter_server_extension(serverapp: Any) -> None:
    # Linked after jupyter_server_ydoc (extensions link in name order) and before any
    # extension loads: its handlers take the store class when it loads.
    Server.app = serverapp
    for group in serverapp.extension_manager.extension_apps.values():
        for app in group:
            current = getattr(app, "ystore_class", None)
            if current is None:
                continue
            if f"{current.__module__}.{current.__qualname__}" == _STOCK_STORE:
                app.ystore_class = P2PYStore
            elif current is not P2PYStore:
                serverapp.log.warning(
                    "p2prtc: YDocExtension.ystore_class is %s: rooms stay unattached", current
                )


def _load_jupyter_server_extension(serverapp: Any) -> None:
    serverapp.log.info("p2prtc: rooms of shared notebooks attach to the p2prtc daemon")
