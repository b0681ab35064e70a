"""Daemon settings, from the environment (the CLI passes its environment to the daemon).

``P2PRTC_INTERFACES``  comma-separated IPv4 addresses for mDNS, ICE and the rendezvous
                       listener (default: every LAN address; tests use 127.0.0.1 or a netns).
``P2PRTC_PORT``        rendezvous port (default 0: any free port, announced by mDNS).
``P2PRTC_MDNS``        ``0``/``off`` disables mDNS (WAN-only or static peers).
``P2PRTC_PEERS``       comma-separated ``host:port`` rendezvous endpoints to dial directly.
``P2PRTC_SIGNAL``      comma-separated signaling relay URLs (ws:// or wss://; default: none).
``P2PRTC_ICE_SERVERS`` comma-separated STUN/TURN URLs (default: none; nothing public is used).
``P2PRTC_TURN_USERNAME`` / ``P2PRTC_TURN_CREDENTIAL``  credentials for the TURN URLs.
``P2PRTC_RELAY_ONLY``  ``1`` forces ICE through the TURN relay (tests, strict networks).
``P2PRTC_MAX_PEERS``   connections this daemon dials up to (default 8); it accepts up to
                       twice that, one more from a newcomer, and when full sheds a settled
                       link for a newcomer (core/mesh.py ``admission``). Beyond it, shares
                       reach the others by gossip (partial mesh).
``P2PRTC_MAX_QUEUED_BYTES``  what may wait to be sent to one peer (default 64 MiB); a peer
                       that falls further behind is disconnected (it resyncs when it is back).
                       The same bound holds for an attached Jupyter room.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2prtc.errors import P2PError


class BadSetting(P2PError):
    """A p2prtc setting in the environment is invalid."""


@dataclass(frozen=True)
class DaemonConfig:
    interfaces: list[str] | None = None
    port: int = 0
    mdns: bool = True
    peers: list[tuple[str, int]] = field(default_factory=list)
    ice_urls: list[str] = field(default_factory=list)
    signal_urls: list[str] = field(default_factory=list)
    turn_username: str | None = None
    turn_credential: str | None = None
    relay_only: bool = False
    max_peers: int = 8
    max_queued_bytes: int = 64 * 1024 * 1024

    def ice_servers(self) -> list[tuple[str, str | None, str | None]]:
        """(url, username, credential) per configured STUN/TURN server."""
        return [
            (url, self.turn_username, self.turn_credential)
            if url.startswith(("turn:", "turns:"))
            else (url, None, None)
            for url in self.ice_urls
        ]

    @property
    def listen_host(self) -> str:
        return self.interfaces[0] if self.interfaces else "0.0.0.0"

    def report(self) -> dict[str, object]:
        """The settings a running daemon cannot change, as JSON (no secret: the TURN
        credential is left out), keyed by their environment variables."""
        return {variable: _plain(getattr(self, name)) for variable, name in _FIXED.items()}

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DaemonConfig:
        env = dict(os.environ) if env is None else env
        return cls(
            interfaces=_list(env.get("P2PRTC_INTERFACES")) or None,
            port=_port(env.get("P2PRTC_PORT", "0"), "P2PRTC_PORT"),
            mdns=_flag(env.get("P2PRTC_MDNS", "1")),
            peers=[endpoint(item) for item in _list(env.get("P2PRTC_PEERS"))],
            ice_urls=_list(env.get("P2PRTC_ICE_SERVERS")),
            signal_urls=_list(env.get("P2PRTC_SIGNAL")),
            turn_username=env.get("P2PRTC_TURN_USERNAME") or None,
            turn_credential=env.get("P2PRTC_TURN_CREDENTIAL") or None,
            relay_only=_flag(env.get("P2PRTC_RELAY_ONLY", "0")),
            max_peers=max(1, _port(env.get("P2PRTC_MAX_PEERS", "8"), "P2PRTC_MAX_PEERS")),
            max_queued_bytes=_size(env.get("P2PRTC_MAX_QUEUED_BYTES"), "P2PRTC_MAX_QUEUED_BYTES"),
        )


# The settings fixed for a daemon's run, by environment variable (P2PRTC_PEERS is not: a
# command's peers are added to the running daemon).
_FIXED = {
    "P2PRTC_INTERFACES": "interfaces",
    "P2PRTC_PORT": "port",
    "P2PRTC_MDNS": "mdns",
    "P2PRTC_SIGNAL": "signal_urls",
    "P2PRTC_ICE_SERVERS": "ice_urls",
    "P2PRTC_TURN_USERNAME": "turn_username",
    "P2PRTC_RELAY_ONLY": "relay_only",
    "P2PRTC_MAX_PEERS": "max_peers",
    "P2PRTC_MAX_QUEUED_BYTES": "max_queued_bytes",
}


FIXED_SETTINGS = tuple(_FIXED)


def settings_not_applied(env: Mapping[str, str], running: Mapping[str, object]) -> list[str]:
    """The variables ``env`` sets (non-empty) to other values than the ``running`` daemon's
    (its ``report()``); raises BadSetting for an invalid one."""
    differing = []
    for variable in _FIXED:
        if env.get(variable) and variable in running:
            asked = DaemonConfig.from_env({variable: env[variable]}).report()[variable]
            if asked != running[variable]:
                differing.append(variable)
    return differing


def _plain(value: object) -> object:
    return list(value) if isinstance(value, (list, tuple)) else value


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("0", "off", "no", "false", "")


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise BadSetting(f"{name}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise BadSetting(f"{name}={value!r} is not a port number")
    return port


def _size(value: str | None, name: str) -> int:
    if value is None:
        return DaemonConfig.max_queued_bytes
    if not value.strip().isdigit() or int(value) < 1:
        raise BadSetting(f"{name}={value!r} is not a size in bytes")
    return int(value)


def endpoint(item: str) -> tuple[str, int]:
    """``host:port`` as a P2PRTC_PEERS entry (or ``--peer``) gives it."""
    host, _, port = item.rpartition(":")
    if not host:
        raise BadSetting(f"P2PRTC_PEERS entry {item!r} is not host:port")
    return host, _port(port, "P2PRTC_PEERS")
