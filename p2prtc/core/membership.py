"""Membership generations: which share secret wins when members rotate it (sans-IO).

Removing a member rotates the share secret to a new *generation*. Rotations travel as REKEY
messages between members. The rules, so that every member ends on one secret:

- A rotation with a higher generation than ours is adopted (if the sender is a member and
  we are still one); one with a lower generation is *stale* and refused loudly: the sender
  missed a rotation, and accepting it would let a removed member back in.
- Two rotations of the same generation (two members removed someone at the same time, or a
  member rotated from a generation it had wrongly) are a tie. Every member breaks it the
  same way: the smaller secret wins, and the member list becomes the intersection of both
  (both removals hold). The winner's secret may be known to the daemon that the losing
  rotation removed, so the *author* of the losing rotation rotates once more on top of the
  winner (its removal re-asserted); that rotation has no tie at its generation unless
  another removal races it, and each round removes at least one daemon.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyState:
    """A share's secret as one member holds it: which rotation, by whom, for whom."""

    generation: int
    secret: bytes
    members: tuple[str, ...]
    author: str = ""  # the daemon that made this rotation ("" for the share's first secret)


class Verdict(enum.Enum):
    ADOPT = "adopt"  # take ``state`` (theirs, or the tie's merge)
    KEEP = "keep"  # ours stands (the same rotation, or we won a tie; ``state`` merges lists)
    STALE = "stale"  # refuse: the sender is behind
    NOT_FROM_A_MEMBER = "not-from-a-member"  # refuse: the sender is not on our list
    REMOVED = "removed"  # we are not on the new list: we were removed from the share


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    state: KeyState  # what to hold afterwards
    rotate_again: bool = False  # our own rotation lost a tie: re-assert it on top

    @property
    def accepted(self) -> bool:
        return self.verdict in (Verdict.ADOPT, Verdict.KEEP)


def judge_rekey(ours: KeyState, theirs: KeyState, sender: str, me: str) -> Judgement:
    """What member ``me`` holding ``ours`` does with ``theirs``, received from ``sender``."""
    if sender not in ours.members:
        return Judgement(Verdict.NOT_FROM_A_MEMBER, ours)
    if theirs.generation < ours.generation:
        return Judgement(Verdict.STALE, ours)
    if me not in theirs.members:
        return Judgement(Verdict.REMOVED, ours)  # newer, or a tie: both removals hold
    if theirs.generation > ours.generation:
        return Judgement(Verdict.ADOPT, theirs)
    if theirs.secret == ours.secret:
        merged = _merge_members(ours, theirs)
        verdict = Verdict.KEEP if merged == ours.members else Verdict.ADOPT
        return Judgement(verdict, _with_members(ours, merged))
    winner = ours if ours.secret < theirs.secret else theirs
    loser = theirs if winner is ours else ours
    merged = _with_members(winner, _merge_members(ours, theirs))
    verdict = Verdict.KEEP if winner is ours and merged == ours else Verdict.ADOPT
    return Judgement(verdict, merged, rotate_again=loser.author == me)


def rotate(current: KeyState, members: tuple[str, ...], secret: bytes, me: str) -> KeyState:
    """Our own rotation on top of ``current`` (``secret`` is fresh randomness, passed in)."""
    return KeyState(current.generation + 1, secret, members, author=me)


def _merge_members(a: KeyState, b: KeyState) -> tuple[str, ...]:
    """Members on both lists, in the order of ``a`` (both removals hold)."""
    return tuple(member for member in a.members if member in b.members)


def _with_members(state: KeyState, members: tuple[str, ...]) -> KeyState:
    return KeyState(state.generation, state.secret, members, state.author)
