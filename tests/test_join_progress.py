"""What `p2prtc join` prints for the daemon's progress events when stdout is not a terminal."""

from __future__ import annotations

import io

from p2prtc.join_progress import JoinProgress

EVENTS = [
    {
        "phase": "searching",
        "mdns": ["10.0.0.2"],
        "mdns_error": None,
        "relays": [{"url": "ws://relay:8765", "connected": True}],
        "peers": [],
    },
    {"phase": "found", "at": "a signaling relay"},
    {"phase": "verifying", "at": "a signaling relay"},
    {"phase": "welcomed", "name": "nb.ipynb", "path": "/home/b/nb.ipynb"},
    {"phase": "connected", "id": "3f9c2a1b77", "address": "10.0.0.3:5000", "path_type": "relay"},
    *[{"phase": "receiving", "received": n * 50_000, "expected": 1_000_000} for n in range(2, 21)],
    {"phase": "a later kind of step"},
]


def test_each_step_is_a_line_and_the_transfer_a_line_per_tenth() -> None:
    out = io.StringIO()
    progress = JoinProgress(out, terminal=False)
    for event in EVENTS:
        progress(event)
    progress.finish()

    assert out.getvalue().splitlines() == [
        "searching: mDNS on 10.0.0.2; relays: ws://relay:8765; peers: none",
        "found a daemon at a signaling relay: asking it for the code",
        "verifying the code (SPAKE2)",
        "code accepted: joining nb.ipynb as /home/b/nb.ipynb",
        "connected to member 3f9c2a1b at 10.0.0.3:5000 via relay",
        *[f"receiving the notebook: {tenth / 10:.1f} MB of 1.0 MB" for tenth in range(1, 11)],
    ]
