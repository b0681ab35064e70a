"""What a join that found nobody tells the user: what it tried, and the one setting to change."""

from __future__ import annotations

import pytest

from p2prtc.daemon.search import SearchPlan

RELAY = "ws://relay.example:8765"


@pytest.mark.parametrize(
    ("plan", "tried", "hint"),
    [
        (
            SearchPlan([], None, [], []),
            "mDNS off; relays: none; peers: none",
            "nothing to search with: turn mDNS on, or give a relay (--signal URL)",
        ),
        (
            SearchPlan(["10.0.0.2"], "LAN discovery (mDNS) failed: no socket", [], []),
            "LAN discovery (mDNS) failed: no socket; relays: none; peers: none",
            "give the other daemon's address instead: P2PRTC_PEERS=HOST:PORT",
        ),
        (
            SearchPlan(["10.0.0.2", "192.168.1.5"], None, [], []),
            "mDNS on 10.0.0.2, 192.168.1.5; relays: none; peers: none",
            "from another network, both daemons need the same relay:"
            " p2prtc stop, then p2prtc --signal URL join CODE",
        ),
        (
            SearchPlan(["10.0.0.2"], None, [{"url": RELAY, "connected": False}], []),
            f"mDNS on 10.0.0.2; relays: {RELAY} (not connected); peers: none",
            f"the relay {RELAY} cannot be reached: check that it runs, or use another",
        ),
        (
            SearchPlan([], None, [{"url": RELAY, "connected": True}], ["10.0.0.9:4000"]),
            f"mDNS off; relays: {RELAY}; peers: 10.0.0.9:4000",
            "check that the other daemon runs with the same relay (p2prtc status there)",
        ),
    ],
)
def test_what_was_tried_and_the_one_hint(plan: SearchPlan, tried: str, hint: str) -> None:
    assert plan.tried() == tried
    assert plan.hint() == hint
    assert plan.explain(59.7) == f"tried for 60 s: {tried}; hint: {hint}"
    answers = ["10.0.0.9:4000: it stopped answering"]
    assert plan.explain(1, answers) == f"tried for 1 s: {tried}; {answers[0]}; hint: {hint}"
