"""Presence answers over signaling relays are bounded, whoever announces (issue 10).

Pure: `PresenceReplies` (p2prtc/daemon/presence.py) takes the time as an argument. The
daemon-level flood through a real relay is in test_e2e_signaling.py.
"""

from __future__ import annotations

from p2prtc.daemon.presence import PresenceReplies


def test_one_announcement_heard_through_several_relays_is_answered_once() -> None:
    replies = PresenceReplies(repeat_after=5.0)
    assert replies.allow("topic", "peer", now=0.0)
    assert not replies.allow("topic", "peer", now=0.1)  # the copy from a second relay
    assert replies.allow("topic", "other-peer", now=0.1)
    assert replies.allow("topic", "peer", now=5.5)  # a later announcement


def test_a_flood_on_one_topic_uses_up_only_that_topics_answers() -> None:
    replies = PresenceReplies(per_topic_rate=1.0, per_topic_burst=8, total_rate=10, total_burst=30)
    flood = [replies.allow("invite", f"stranger-{n}", now=0.0) for n in range(1000)]
    assert sum(flood) == 8
    assert replies.refused == 992
    # Ten seconds of flooding at any speed get about ten more answers (1/s), no more.
    later = [replies.allow("invite", f"later-{n}", now=n / 100) for n in range(1, 1001)]
    assert 9 <= sum(later) <= 10
    # Members announcing on their share's topic are still answered.
    assert all(replies.allow("member", f"member-{n}", now=10.0) for n in range(8))


def test_all_topics_together_stay_within_the_total() -> None:
    replies = PresenceReplies(per_topic_rate=1.0, per_topic_burst=8, total_rate=10, total_burst=30)
    burst = [replies.allow(f"topic-{n % 50}", f"peer-{n}", now=0.0) for n in range(400)]
    assert sum(burst) == 30
    second = [replies.allow(f"topic-{n % 50}", f"next-{n}", now=1.0) for n in range(400)]
    assert sum(second) == 10


def test_topics_we_left_lose_their_bucket() -> None:
    replies = PresenceReplies(per_topic_rate=1.0, per_topic_burst=1, repeat_after=5.0)
    assert replies.allow("old", "a", now=0.0)
    assert not replies.allow("old", "b", now=0.0)
    replies.forget_topics_except({"new"})
    assert replies.allow("old", "b", now=0.0)  # a fresh bucket once we listen again


def test_the_answered_memory_is_bounded() -> None:
    replies = PresenceReplies(per_topic_burst=10**6, total_burst=10**6, remembered=100)
    for n in range(1000):
        assert replies.allow("topic", f"peer-{n}", now=0.0)
    assert replies.allow("topic", "peer-0", now=0.0)  # forgotten: answered again
    assert not replies.allow("topic", "peer-999", now=0.0)
