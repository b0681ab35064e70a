"""What the daemon believes another daemon offers (p2prtc/daemon/endpoints.py), no sockets.

An endpoint comes from a static address (it may hold anything, announces nothing), an mDNS
announcement (its nameplates, and share tags only members recognise), or relay presence
(the shares whose topics it was heard on).
"""

from __future__ import annotations

from p2prtc.core.keys import new_secret, share_tag
from p2prtc.core.messages import Announcement
from p2prtc.daemon.endpoints import Endpoint, PipeOpener, lan_opener

SHARE = bytes(16)
SECRET = new_secret()
EPOCH = 1000
OPENER: PipeOpener = lan_opener("127.0.0.1", 9)


def test_a_static_peer_may_hold_any_share_and_offer_any_invitation() -> None:
    endpoint = Endpoint("127.0.0.1:9", OPENER)
    assert endpoint.may_hold(SHARE, SECRET, EPOCH)
    assert endpoint.nameplates is None  # unknown: a joiner tries it for every nameplate
    assert endpoint.relay_instance is None


def test_an_announced_daemon_holds_the_shares_whose_tags_we_recognise() -> None:
    announcement = Announcement(("7",), (share_tag(SECRET, EPOCH),))
    endpoint = Endpoint("p2prtc-1._p2prtc._tcp.local.", OPENER, announcement)
    assert endpoint.may_hold(SHARE, SECRET, EPOCH)
    assert endpoint.may_hold(SHARE, SECRET, EPOCH + 1)  # one epoch of clock skew
    assert not endpoint.may_hold(SHARE, SECRET, EPOCH + 2)
    assert not endpoint.may_hold(SHARE, new_secret(), EPOCH)
    assert endpoint.nameplates == {"7"}


def test_a_daemon_announcing_a_secret_it_rotated_away_is_dialled_by_who_still_holds_it() -> None:
    old, current = SECRET, new_secret()
    announcement = Announcement((), (share_tag(current, EPOCH),), (share_tag(old, EPOCH),))
    endpoint = Endpoint("p2prtc-2._p2prtc._tcp.local.", OPENER, announcement)
    assert endpoint.may_hold(SHARE, old, EPOCH)  # to be told it was cut off
    assert endpoint.retired(old, EPOCH)  # whose turn it is to dial does not matter then
    assert endpoint.may_hold(SHARE, current, EPOCH)
    assert not endpoint.retired(current, EPOCH)
    assert not Endpoint("127.0.0.1:9", OPENER).retired(old, EPOCH)


def test_a_relay_peer_holds_exactly_the_shares_it_was_heard_on() -> None:
    endpoint = Endpoint("signal:ab12", OPENER, shares={SHARE})
    assert endpoint.relay_instance == "ab12"
    assert endpoint.may_hold(SHARE, SECRET, EPOCH)
    assert not endpoint.may_hold(bytes(15) + b"\x01", SECRET, EPOCH)
    assert endpoint.nameplates == set()  # invitations are found on their own topics
