"""The invitation budgets (issue 10): every answered guess is settled, none escapes."""

from __future__ import annotations

import pytest

from p2prtc.daemon.invitations import (
    WRONG_ATTEMPTS_ALLOWED,
    CodeBurned,
    CodeBusy,
    CodeUsedUp,
    Invitation,
    Invitations,
)

SHARE = b"s" * 16
LIFETIME_S = 600.0


def invitation(invitations: Invitations, uses: int = 1) -> Invitation:
    return invitations.create(SHARE, words=2, lifetime_s=LIFETIME_S, uses=uses)


def exchange(
    invitations: Invitations, code: Invitation, *, guessed: bool, proven: bool = False
) -> None:
    """One exchange from the opening envelope to its end, however it ended."""
    invitations.begin(invitations.find(code.nameplate))
    if guessed:
        invitations.reserve_guess(code)
    invitations.end(code, guessed=guessed, proven=proven, peer="test")


def test_every_unproven_guess_costs_an_attempt_and_the_last_burns_the_code() -> None:
    invitations = Invitations()
    code = invitation(invitations)
    for left in range(WRONG_ATTEMPTS_ALLOWED - 1, 0, -1):
        exchange(invitations, code, guessed=True)
        assert code.wrong_attempts_left == left
    exchange(invitations, code, guessed=True)
    with pytest.raises(CodeBurned):
        invitations.find(code.nameplate)
    (retired,) = invitations.retired_for_share(SHARE)
    assert retired.status() == {
        "nameplate": code.nameplate,
        "reason": "burned",
        "wrong_attempts_used": WRONG_ATTEMPTS_ALLOWED,
    }
    # Still offered until it would have expired, so a joiner hears "burned" at once.
    assert invitations.nameplates() == [code.nameplate]


def test_an_exchange_without_a_guess_is_free() -> None:
    invitations = Invitations()
    code = invitation(invitations)
    for _ in range(10):
        exchange(invitations, code, guessed=False)
    assert (code.wrong_attempts_left, code.uses_left) == (WRONG_ATTEMPTS_ALLOWED, 1)


def test_a_proven_code_costs_a_use_not_an_attempt() -> None:
    invitations = Invitations()
    code = invitation(invitations, uses=2)
    exchange(invitations, code, guessed=True, proven=True)
    assert (code.wrong_attempts_left, code.uses_left) == (WRONG_ATTEMPTS_ALLOWED, 1)
    exchange(invitations, code, guessed=True, proven=True)
    with pytest.raises(CodeUsedUp):
        invitations.find(code.nameplate)


def test_a_code_whose_uses_are_all_in_flight_is_busy_not_used() -> None:
    """A wrong guess still being settled holds the one use: the next joiner is told to wait
    (and retries), not that the code was used, which it may never be."""
    invitations = Invitations()
    code = invitation(invitations)
    invitations.begin(invitations.find(code.nameplate))
    invitations.reserve_guess(code)
    with pytest.raises(CodeBusy):
        invitations.find(code.nameplate)
    invitations.end(code, guessed=True, proven=False, peer="test")
    exchange(invitations, code, guessed=True, proven=True)  # the next joiner gets it
    with pytest.raises(CodeUsedUp):
        invitations.find(code.nameplate)


def test_concurrent_guesses_never_exceed_the_budget() -> None:
    invitations = Invitations()
    code = invitation(invitations, uses=10)
    for _ in range(10):
        invitations.begin(invitations.find(code.nameplate))
    for _ in range(WRONG_ATTEMPTS_ALLOWED):
        invitations.reserve_guess(code)
    with pytest.raises(CodeBusy):
        invitations.reserve_guess(code)
    # One guess proven: its reservation returns, and one more guess may be answered.
    invitations.end(code, guessed=True, proven=True, peer="test")
    invitations.reserve_guess(code)
    with pytest.raises(CodeBusy):
        invitations.reserve_guess(code)
