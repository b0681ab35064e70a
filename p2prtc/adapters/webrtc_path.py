"""What a WebRTC link's peer connection tells of its path: DTLS fingerprints, ICE's pair.

Read-outs for the handshake's transcript (the fingerprints both SDPs declare) and for
status (how the selected candidate pair goes, the peer's address on it). Part of the
aiortc adapter: `PeerLink` (adapters/webrtc.py) holds one as `path`.
"""

from __future__ import annotations

import re
from typing import Literal

from aioice.ice import CandidatePair
from aiortc import RTCPeerConnection

PathType = Literal["host", "srflx", "relay", "prflx"]
_PATH_TYPES: dict[str, PathType] = {t: t for t in ("host", "srflx", "relay", "prflx")}

_FINGERPRINT_LINE = re.compile(r"^a=fingerprint:(\S+) (\S+)\s*$", re.MULTILINE)


def sdp_fingerprints(sdp: str) -> list[str]:
    """The DTLS certificate fingerprints an SDP declares, as "sha-256 AB:CD:..." strings."""
    return [f"{alg.lower()} {value.upper()}" for alg, value in _FINGERPRINT_LINE.findall(sdp)]


class LinkPath:
    """The path of one peer connection, as its descriptions and ICE agent show it now."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self._pc = pc

    def local_fingerprints(self) -> list[str]:
        """DTLS fingerprints in our SDP (bind them into the handshake's transcript)."""
        description = self._pc.localDescription
        return sdp_fingerprints(description.sdp) if description else []

    def remote_fingerprints(self) -> list[str]:
        """DTLS fingerprints in the peer's SDP; DTLS refuses a certificate not matching."""
        description = self._pc.remoteDescription
        return sdp_fingerprints(description.sdp) if description else []

    def path_type(self) -> PathType | None:
        """How the selected path goes: "relay" if either end relays, else our local
        candidate's type ("host", "srflx"); None before ICE has selected a path."""
        pair = self._selected_pair()
        if pair is None:
            return None
        if "relay" in (pair.local_candidate.type, pair.remote_candidate.type):
            return "relay"
        return _PATH_TYPES.get(pair.local_candidate.type)

    def remote_address(self) -> tuple[str, int] | None:
        """The peer's address on the selected path, None before ICE has selected one."""
        pair = self._selected_pair()
        return pair.remote_addr if pair is not None else None

    def _selected_pair(self) -> CandidatePair | None:
        # aiortc exposes no selected-pair API: read aioice's nominated pair for RTP/data
        # component 1 (private attribute, checked against aiortc 1.16 / aioice 0.13).
        sctp = self._pc.sctp
        if sctp is None:
            return None
        connection = sctp.transport.transport._connection
        pair: CandidatePair | None = connection._nominated.get(1)
        return pair
