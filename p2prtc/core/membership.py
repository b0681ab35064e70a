"""Membership generations: which share secret wins when members rotate it (sans-IO).

Removing a member rotates the share secret to a new *generation*; rotations travel as
REKEY messages between members and every member merges what it hears, so that all end on
one secret that no removed daemon knows:

- Removals win: a state carries the set of daemons ever removed from the share; a merge
  takes the union of both sides' removals and members (members minus removed).
- The secret is the newest rotation's: higher generation, and between two rotations of one
  generation (made at the same time) the smaller secret. Every member breaks ties alike.
- If that winning rotation was made without knowing every removal in the merge, a removed
  daemon may know its secret: the member that sees this rotates once more (all removals
  now known). Removal sets only grow, so this ends.
- A rotation older than ours that teaches us nothing is *stale* and refused loudly: its
  sender missed a rotation (the caller sends it ours). A daemon's rotations count up to
  the generation that removed it (they were made at the same time as its removal: two
  members removing each other both go); later ones are refused. A merge that removes us
  tells us we were removed.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyState:
    """A share's secret as one member holds it: which rotation, by whom, for whom."""

    generation: int
    secret: bytes
    members: tuple[str, ...]
    # Every daemon ever removed, with the generation of the rotation that removed it.
    removed: frozenset[tuple[str, int]] = frozenset()
    author: str = ""  # the daemon that made this rotation ("" for the share's first secret)


class Verdict(enum.Enum):
    ADOPT = "adopt"  # hold ``state``: it is newer than ours, or merges something new in
    KEEP = "keep"  # ours stands as it is (the same rotation again)
    STALE = "stale"  # refuse: the sender is behind and taught us nothing
    NOT_FROM_A_MEMBER = "not-from-a-member"  # refuse: we removed the sender
    REMOVED = "removed"  # the merge removes us from the share


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    state: KeyState  # what to hold afterwards
    rotate_again: bool = False  # the winning secret may be known to a removed daemon

    @property
    def accepted(self) -> bool:
        return self.verdict in (Verdict.ADOPT, Verdict.KEEP)


def judge_rekey(ours: KeyState, theirs: KeyState, sender: str, me: str) -> Judgement:
    """What member ``me`` holding ``ours`` does with ``theirs``, received from ``sender``."""
    removed_at = _removals(ours)
    if sender in removed_at and theirs.generation > removed_at[sender]:
        return Judgement(Verdict.NOT_FROM_A_MEMBER, ours)
    removed = _merge_removals(ours, theirs)
    gone = {member for member, _ in removed}
    if me in gone:
        return Judgement(Verdict.REMOVED, ours)
    if theirs.generation < ours.generation and _knows(ours, theirs):
        return Judgement(Verdict.STALE, ours)
    winner = min(ours, theirs, key=lambda state: (-state.generation, state.secret))
    members = tuple(m for m in dict.fromkeys(ours.members + theirs.members) if m not in gone)
    merged = KeyState(winner.generation, winner.secret, members, removed, winner.author)
    if merged == ours:
        return Judgement(Verdict.KEEP, ours)
    return Judgement(Verdict.ADOPT, merged, rotate_again=not gone <= set(_removals(winner)))


def rotate(current: KeyState, removing: str, secret: bytes, me: str) -> KeyState:
    """Our own rotation on top of ``current``, removing ``removing`` ("" for none): all
    removals known so far hold. ``secret`` is fresh randomness, passed in."""
    generation = current.generation + 1
    removed = dict(_removals(current))
    if removing and removing not in removed:
        removed[removing] = generation
    members = tuple(m for m in current.members if m not in removed)
    return KeyState(generation, secret, members, frozenset(removed.items()), author=me)


class Standing(enum.Enum):
    """Where this daemon stands in a share, as ``status`` tells it."""

    MEMBER = "member"  # it belongs, with other members (or none yet: a new share)
    REMOVED = "removed"  # a member told it that it was removed
    # A member told it that the secret was rotated without it (it was offline during a
    # removal): only a new invitation lets it back in.
    OUTDATED = "outdated"
    ALONE = "alone"  # every other member left or was removed: nobody to sync with


def standing(
    me: str,
    members: Iterable[str],
    departed: Iterable[str],
    removed: Mapping[str, int],
    cut_off: Standing | None = None,
) -> Standing:
    """This daemon's standing in a share from what its record holds (``cut_off``: what a
    member told it, REMOVED or OUTDATED)."""
    if cut_off is not None:
        return cut_off
    gone = set(departed)
    others = [m for m in members if m != me and m not in gone]
    if not others and (gone - {me} or removed):
        return Standing.ALONE
    return Standing.MEMBER


def _removals(state: KeyState) -> dict[str, int]:
    return dict(state.removed)


def _merge_removals(a: KeyState, b: KeyState) -> frozenset[tuple[str, int]]:
    """Both sides' removals; a daemon removed on both counts from the earlier rotation."""
    merged = _removals(a)
    for member, generation in b.removed:
        merged[member] = min(generation, merged.get(member, generation))
    return frozenset(merged.items())


def _knows(ours: KeyState, theirs: KeyState) -> bool:
    """Whether ``ours`` already has every member and removal ``theirs`` has."""
    known = set(ours.members) | set(_removals(ours))
    return theirs.removed <= ours.removed and set(theirs.members) <= known
