"""Names in a home: this daemon's (``config.json``, set by ``p2prtc config name``) and the
ones other daemons told it (``names.json``). Light on imports: the CLI reads them too.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import socket
from pathlib import Path

from p2prtc import paths
from p2prtc.core.names import BadName, check_name, default_name, short_label

logger = logging.getLogger(__name__)

_CONFIG = "config.json"


def configured_name(home: Path) -> str | None:
    """The name set with ``p2prtc config name``; None when unset (or the file is damaged)."""
    try:
        return check_name(_load_config(home)["name"])
    except (KeyError, BadName):
        return None


def daemon_name(home: Path) -> str:
    """The name this daemon goes by: the configured one, else ``user@hostname``."""
    configured = configured_name(home)
    if configured is not None:
        return configured
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (some containers)
        user = "user"
    return default_name(user, socket.gethostname())


def save_name(home: Path, name: str) -> None:
    config = _load_config(home)
    config["name"] = check_name(name)
    paths.write_private(home / _CONFIG, json.dumps(config, indent=1).encode())


def _load_config(home: Path) -> dict[str, object]:
    return _read_object(home / _CONFIG)


def _read_object(path: Path) -> dict[str, object]:
    """The JSON object in ``path``; empty when missing, or damaged (logged: a bad file here
    only costs names)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.error("ignoring the unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


class KnownNames:
    """The names other daemons told us, by daemon id (``names.json``), and ours: ``members``
    and ``log`` show them, also for members offline now. Each was checked when it arrived."""

    def __init__(self, home: Path) -> None:
        self._path = home / "names.json"
        self._names: dict[str, str] = {}
        for daemon_id, name in _read_object(self._path).items():
            with contextlib.suppress(BadName):
                self._names[daemon_id] = check_name(name)

    def get(self, daemon_id: str) -> str | None:
        return self._names.get(daemon_id)

    def label(self, daemon_id: str) -> str:
        """A member as ``log`` and ``status`` show it: ``alice@laptop [1a2b3c4d]``."""
        return short_label(daemon_id, self.get(daemon_id))

    def learn(self, daemon_id: str, name: str | None) -> None:
        if name is not None and self._names.get(daemon_id) != name:
            self._names[daemon_id] = name
            paths.write_private(self._path, json.dumps(self._names, indent=1).encode())
