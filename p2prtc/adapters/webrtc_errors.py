"""What can go wrong with a WebRTC link, each error's docstring being what a user reads.

Shared by the parts of the aiortc adapter (adapters/webrtc*.py) and by their callers.
"""

from __future__ import annotations

from p2prtc.errors import P2PError


class WebRTCError(P2PError):
    """The peer-to-peer connection failed."""


class BadSessionDescription(WebRTCError):
    """The other daemon sent an unusable connection description."""


class NoUsableAddress(WebRTCError):
    """No local network address can be used for a peer-to-peer connection."""


class LinkOpenTimeout(WebRTCError):
    """The peer-to-peer connection did not open in time."""


class LinkClosed(WebRTCError):
    """The peer-to-peer connection is closed."""


class MessageTooLarge(WebRTCError):
    """A message is too large for the peer-to-peer connection."""
