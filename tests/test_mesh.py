"""The mesh's pure rules (p2prtc/core/mesh.py), without sockets or an event loop."""

from __future__ import annotations

import random

import pytest

from p2prtc.core.mesh import (
    BUSY_RETRY_S,
    MAX_BACKOFF_S,
    PEERLESS_GRACE_S,
    STABLE_CONNECTION_S,
    Admission,
    Backoff,
    HandshakeSlots,
    HeldLink,
    admission,
    is_newcomer,
    link_to_shed,
    may_claim,
    member_bound,
    newcomer_wins,
    relay_targets,
    should_dial,
)
from scripts.sim_joins import run


def dial(
    newcomer: bool = False,
    connections: int = 0,
    ranks: tuple[str, str] | None = ("a", "b"),
    dials: int = 0,
) -> bool:
    return should_dial(
        newcomer=newcomer,
        open_connections=connections,
        dials_in_progress=dials,
        max_peers=2,
        ranks=ranks,
    )


def test_exactly_one_of_two_daemons_dials_the_other() -> None:
    assert dial(ranks=("alpha", "beta")) is True
    assert dial(ranks=("beta", "alpha")) is False


def test_a_static_address_without_names_is_dialled() -> None:
    assert dial(ranks=None) is True


def test_nobody_new_is_dialled_past_max_peers() -> None:
    assert dial(connections=1) is True
    assert dial(connections=2) is False
    assert dial(connections=2, ranks=None) is False


def test_a_newcomer_dials_even_when_full_and_ranked_second() -> None:
    assert dial(newcomer=True, connections=5, ranks=("z", "a")) is True


def test_a_member_whose_links_dropped_is_a_newcomer_only_after_a_grace() -> None:
    """Both ends of a dropped link are left without one: the name order decides first (one
    dial, not two making a duplicate link), the member dials as a newcomer after the grace."""
    assert is_newcomer(joining=True, peerless_for_s=0.0) is True
    assert is_newcomer(joining=False, peerless_for_s=0.0) is False
    assert is_newcomer(joining=False, peerless_for_s=PEERLESS_GRACE_S) is True
    assert is_newcomer(joining=True, peerless_for_s=None) is False


def test_a_newcomer_dials_in_parallel_only_up_to_the_bound_a_listener_accepts() -> None:
    # max_peers=2: a daemon holds at most 2*2 connections, one more while joining. Ten
    # members found at once must not become ten links (a CI run saw a joiner end with 6).
    assert dial(newcomer=True, connections=4, dials=3) is True
    assert dial(newcomer=True, connections=5, dials=3) is False
    assert dial(newcomer=True, connections=9, dials=1) is False


def both_ends_keep(
    existing: tuple[str, str], new: tuple[str, str]
) -> bool:  # (peer identity, initiator id)
    return newcomer_wins(
        existing_identity=existing[0],
        existing_initiator=existing[1],
        new_identity=new[0],
        new_initiator=new[1],
    )


def test_crossed_dials_keep_the_link_dialled_by_the_smaller_id_on_both_ends() -> None:
    # a and b dialled each other at once. On a, the existing link is a's dial (initiator a)
    # and the new one b's; on b it is the other way round. Both must keep a's dial.
    on_a = both_ends_keep(existing=("b/1", "a"), new=("b/1", "b"))
    on_b = both_ends_keep(existing=("a/1", "b"), new=("a/1", "a"))
    assert on_a is False  # a keeps its own dial
    assert on_b is True  # b replaces its dial with a's


def test_a_restarted_peer_replaces_its_dead_link() -> None:
    assert both_ends_keep(existing=("b/old", "a"), new=("b/new", "b")) is True


def test_a_second_dial_from_the_same_side_replaces_the_stale_one() -> None:
    assert both_ends_keep(existing=("b/1", "b"), new=("b/1", "b")) is True


def test_an_update_goes_to_every_holder_but_its_sender() -> None:
    peers = [("a", True), ("b", True), ("c", False), ("d", True)]
    assert relay_targets(peers, origin="b") == ["a", "d"]
    assert relay_targets(peers, origin=None) == ["a", "b", "d"]
    assert relay_targets([], origin="a") == []


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff()
    delays = []
    for _ in range(8):
        backoff.failed(now=100.0)
        delays.append(backoff.next_attempt - 100.0)
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_BACKOFF_S
    assert not backoff.due(100.0 + MAX_BACKOFF_S - 0.01)
    assert backoff.due(100.0 + MAX_BACKOFF_S)


def test_a_busy_daemon_is_retried_soon_with_jitter_and_no_growing_backoff() -> None:
    backoff = Backoff(failures=3)
    first, second = Backoff(), Backoff()
    first.busy(now=0.0, rng=random.Random(1))
    second.busy(now=0.0, rng=random.Random(2))
    backoff.busy(now=0.0, rng=random.Random(1))
    assert first.next_attempt != second.next_attempt
    for retry in (first, second):
        assert 0.5 * BUSY_RETRY_S <= retry.next_attempt <= 1.5 * BUSY_RETRY_S
    assert backoff.failures == 3
    # Seeded: a replay decides exactly alike.
    assert backoff.next_attempt == first.next_attempt


@pytest.mark.parametrize(
    ("lasted_s", "failures_after", "retry_at"),
    [(STABLE_CONNECTION_S - 1, 3, 100.0 + 0.5 * 2**3), (STABLE_CONNECTION_S, 0, 0.0)],
)
def test_a_connection_that_drops_at_once_counts_as_a_failure(
    lasted_s: float, failures_after: int, retry_at: float
) -> None:
    backoff = Backoff(failures=2, next_attempt=50.0)
    backoff.connection_ended(now=100.0, lasted_s=lasted_s)
    assert backoff.failures == failures_after
    assert backoff.next_attempt == retry_at


def test_a_fresh_announcement_ends_the_wait_but_not_the_failure_count() -> None:
    backoff = Backoff()
    backoff.failed(now=10.0)
    backoff.retry_now()
    assert backoff.due(10.0) and backoff.failures == 1


def test_an_id_can_only_be_claimed_with_a_share_of_its_open_link() -> None:
    share, other = b"S" * 16, b"X" * 16
    assert may_claim({share}, share) is True  # a restarted member redials with our share
    assert may_claim({share}, other) is False  # a daemon of another share claims the id
    assert may_claim(set(), other) is True  # a link that carries nothing protects nothing


def test_handshake_slots_bound_each_source_and_the_total() -> None:
    slots = HandshakeSlots(total=5, per_source=2)
    assert [slots.take("10.0.0.9") for _ in range(3)] == [True, True, False]
    assert [slots.take(f"10.0.0.{n}") for n in range(1, 5)] == [True, True, True, False]
    slots.release("10.0.0.9")
    assert slots.take("10.0.0.4") is True  # a slot freed anywhere serves anyone
    assert slots.take("10.0.0.9") is False


def test_a_full_listener_lets_one_newcomer_in_then_sheds_for_the_next() -> None:
    def admit(connections: int, newcomer: bool) -> Admission:
        return admission(open_connections=connections, max_peers=2, newcomer=newcomer)

    assert admit(3, newcomer=False) is Admission.ACCEPT
    assert admit(4, newcomer=False) is Admission.REFUSE
    assert admit(4, newcomer=True) is Admission.ACCEPT
    assert admit(5, newcomer=True) is Admission.SHED_ONE
    assert admit(9, newcomer=True) is Admission.SHED_ONE
    assert admit(9, newcomer=False) is Admission.REFUSE


def test_the_link_shed_is_a_settled_one_a_newcomer_dialled_first() -> None:
    settled = STABLE_CONNECTION_S
    links = [
        HeldLink("a", age_s=settled + 50, came_as_newcomer=False),
        HeldLink("d", age_s=settled, came_as_newcomer=True),
        HeldLink("c", age_s=settled + 5, came_as_newcomer=True),
        HeldLink("b", age_s=settled - 1, came_as_newcomer=True),  # may still be joining
    ]
    assert link_to_shed(links) == "c"  # a newcomer's, settled; ties go to the smallest id
    assert link_to_shed([links[0], links[3]]) == "a"  # else any settled link
    assert link_to_shed([links[3]]) is None  # nothing settled: refused, retried soon
    assert link_to_shed([]) is None


# --- late joiners into a mesh whose members are all full (scripts/sim_joins.py) --------


# max_peers=1 is left out: a daemon content with one link can end in a pair cut off from
# the rest (docs/reliability.md, "Connection bound"); the script prints how often.
@pytest.mark.parametrize("max_peers", [2, 3, 8])
@pytest.mark.parametrize("seed", range(10))
def test_late_joiners_into_a_full_mesh_all_get_in_and_it_stays_connected(
    max_peers: int, seed: int
) -> None:
    result = run(max_peers, joiners=12, seed=seed)
    assert result.locked_out == 0
    assert not result.split
    assert result.most_links <= member_bound(max_peers, joining=True)


def test_without_shedding_the_same_late_joiners_are_locked_out() -> None:
    result = run(2, joiners=12, seed=0, shed=False)
    assert result.locked_out == 12
