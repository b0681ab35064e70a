"""A self-hostable, y-webrtc compatible WebSocket signaling relay.

It relays opaque messages between clients subscribed to the same topic and knows
nothing of p2prtc: run it alone with `p2prtc-signal` (see docs/signaling.md), or several
sharing their topics through Redis (`--redis URL`, signaling/cluster.py).
"""

from __future__ import annotations

from signaling.limits import Limits
from signaling.server import SignalingServer

__all__ = ["Limits", "SignalingServer"]
