"""Membership generations (issue 10): every member ends on one secret, removals hold."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2prtc.core.membership import KeyState, Standing, Verdict, judge_rekey, rotate, standing

MEMBERS = ("a", "b", "c", "d")
START = KeyState(3, b"\x50" * 32, MEMBERS)


def secret(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_a_newer_rotation_is_adopted_and_an_older_one_refused() -> None:
    newer = rotate(START, "d", secret(1), "a")
    assert newer.members == ("a", "b", "c") and newer.generation == 4
    judgement = judge_rekey(START, newer, "a", "b")
    assert (judgement.verdict, judgement.state, judgement.rotate_again) == (
        Verdict.ADOPT,
        newer,
        False,
    )
    stale = judge_rekey(newer, START, "c", "b")
    assert (stale.verdict, stale.state, stale.accepted) == (Verdict.STALE, newer, False)


def test_a_rotation_from_a_removed_daemon_is_refused() -> None:
    newer = rotate(START, "d", secret(1), "a")
    comeback = rotate(rotate(START, "", secret(0), "d"), "", secret(0), "d")
    assert judge_rekey(newer, comeback, "d", "b").verdict is Verdict.NOT_FROM_A_MEMBER
    # One made at the same time as its removal still counts (and cannot bring it back).
    concurrent = judge_rekey(newer, rotate(START, "c", secret(9), "d"), "d", "b")
    assert concurrent.state.members == ("a", "b")


def test_the_removed_member_learns_it_was_removed() -> None:
    newer = rotate(START, "d", secret(1), "a")
    judgement = judge_rekey(START, newer, "a", "d")
    assert (judgement.verdict, judgement.state) == (Verdict.REMOVED, START)


def test_a_tie_is_broken_alike_everywhere_and_both_removals_hold() -> None:
    by_a = rotate(START, "d", secret(2), "a")  # a removes d
    by_b = rotate(START, "c", secret(1), "b")  # b removes c, with the smaller secret
    at_a = judge_rekey(by_a, by_b, "b", "a")
    at_b = judge_rekey(by_b, by_a, "a", "b")
    for judgement in (at_a, at_b):
        assert judgement.verdict is Verdict.ADOPT
        assert judgement.state.members == ("a", "b")
        assert judgement.state.removed == {("c", 4), ("d", 4)}
        # b's secret wins the tie, but d (removed by a) may know it: rotate once more.
        assert judgement.state.secret == by_b.secret and judgement.rotate_again
    assert at_a.state == at_b.state


def test_the_same_rotation_heard_twice_changes_nothing() -> None:
    newer = rotate(START, "d", secret(1), "a")
    judgement = judge_rekey(newer, newer, "c", "b")
    assert (judgement.verdict, judgement.state, judgement.rotate_again) == (
        Verdict.KEEP,
        newer,
        False,
    )


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_concurrent_removals_converge_to_one_secret_without_the_removed(seed: int) -> None:
    """Members a..d; two or three of them each remove someone else at the same time; the
    rotations are gossiped in a random order, members rotating again where the merge asks.
    One state ends up held by exactly the daemons on its list, and no removed daemon is on
    it (a removal by a daemon that was itself removed meanwhile holds too)."""
    rng = random.Random(seed)
    held = dict.fromkeys(MEMBERS, START)
    removers = rng.sample(MEMBERS, rng.choice((2, 3)))
    removed = {remover: rng.choice([m for m in MEMBERS if m != remover]) for remover in removers}
    secrets = itertools.count(1)
    inbox: list[tuple[str, str, KeyState]] = []  # (to, from, state)

    def hold_and_spread(member: str, state: KeyState) -> None:
        held[member] = state
        inbox.extend((to, member, state) for to in state.members if to != member)

    for remover, target in removed.items():
        hold_and_spread(remover, rotate(held[remover], target, secret(next(secrets)), remover))
    told_removed: set[str] = set()
    while inbox:
        to, sender, state = inbox.pop(rng.randrange(len(inbox)))
        if to in told_removed:
            continue
        judgement = judge_rekey(held[to], state, sender, to)
        if judgement.verdict is Verdict.REMOVED:
            told_removed.add(to)
        elif judgement.rotate_again:
            hold_and_spread(to, rotate(judgement.state, "", secret(next(secrets)), to))
        elif judgement.verdict is Verdict.ADOPT:
            hold_and_spread(to, judgement.state)
        elif judgement.verdict is Verdict.STALE:
            inbox.append((sender, to, held[to]))  # the caller sends ours back
    consistent = {s for s in held.values() if all(held[m] == s for m in s.members)}
    assert len(consistent) == 1, held
    (final,) = consistent
    assert not set(final.members) & set(removed.values()), (final, removed)
    assert set(MEMBERS) - set(final.members) == set(removed.values())


def test_standing_tells_cut_off_alone_and_a_new_share_apart() -> None:
    assert standing("a", ["a"], [], {}) is Standing.MEMBER  # shared, nobody joined yet
    assert standing("a", ["a", "b"], [], {}) is Standing.MEMBER
    assert standing("a", ["a", "b"], ["b"], {}) is Standing.ALONE  # b left
    assert standing("a", ["a"], [], {"b": 1}) is Standing.ALONE  # b removed
    assert standing("a", ["a", "b", "c"], ["b"], {}) is Standing.MEMBER  # c is there
    for told in (Standing.REMOVED, Standing.OUTDATED):
        assert standing("a", ["a", "b"], [], {}, told) is told
