"""Where ICE may look for paths: the WebRTC adapter's settings, without aiortc.

The daemon builds and checks these at start; aiortc itself (and PyAV, which it imports) is
loaded only when the first link is made (see adapters/webrtc.py and daemon/links.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IceServer:
    """One STUN or TURN server, as in the WebRTC API (`turn:` needs username/credential)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class IceConfig:
    """Where ICE may look for paths.

    `servers`: STUN/TURN servers; empty means host candidates only (LAN, loopback).
    `host_addresses`: local addresses to gather host candidates on; None means what aioice
    picks (every interface's addresses except 127.0.0.1 and link-local IPv6).
    `relay_only`: use only TURN-relayed candidates (hides local addresses from the peer).
    """

    servers: list[IceServer] = field(default_factory=list)
    host_addresses: list[str] | None = None
    relay_only: bool = False

    def __post_init__(self) -> None:
        has_turn = any(url.startswith("turn") for s in self.servers for url in s.urls)
        if self.relay_only and not has_turn:
            raise ValueError("relay_only needs a TURN server")
        if self.host_addresses == [] and not has_turn:
            raise ValueError("host_addresses is empty and there is no TURN server")
