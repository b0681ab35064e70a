"""Invitations: short-lived join codes a share's owner hands out (kept in memory only)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from p2prtc.core.codes import JoinCode, generate_code, pick_nameplate
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

WRONG_ATTEMPTS_ALLOWED = 3


class NoSuchInvitation(P2PError):
    """The daemon reached does not know this join code: check it for typos, or ask for a new one"""

    exit_code = ExitCode.CODE_REFUSED


class CodeExpired(P2PError):
    """This join code has expired; ask for a new one (p2prtc invite)."""

    exit_code = ExitCode.CODE_REFUSED


class CodeUsedUp(P2PError):
    """This join code has already been used; ask for a new one (p2prtc invite)."""

    exit_code = ExitCode.CODE_REFUSED


class CodeBurned(P2PError):
    """This join code was cancelled after too many wrong attempts; ask for a new one."""

    exit_code = ExitCode.CODE_REFUSED


class CodeBusy(P2PError):
    """Someone else is trying this join code right now; try again in a few seconds."""

    exit_code = ExitCode.CODE_REFUSED


# Retired nameplates remembered (with why) so a late joiner reads the real reason.
MAX_RETIRED = 256


@dataclass
class Invitation:
    """One join code and its budgets.

    The attempt rule: an exchange whose PAKE message the host answered is a guess at the
    code. It costs one wrong attempt unless the joiner then proves the code (whatever happens
    next: a closed pipe, junk, a timeout, a wrong confirmation). Guesses in flight are
    reserved against the budget before the host answers, so concurrent exchanges can never
    make more guesses than ``WRONG_ATTEMPTS_ALLOWED`` in all.
    """

    code: JoinCode
    share_id: bytes
    expires_at: float
    uses_left: int
    wrong_attempts_left: int = WRONG_ATTEMPTS_ALLOWED
    in_flight: int = 0  # exchanges running now: each may use the code
    guesses_in_flight: int = 0  # of those, the ones whose PAKE was answered

    @property
    def nameplate(self) -> str:
        return self.code.nameplate

    @property
    def wrong_attempts_used(self) -> int:
        return WRONG_ATTEMPTS_ALLOWED - self.wrong_attempts_left

    def check_usable(self, now: float) -> None:
        """Whether one more exchange may start on this code."""
        if now >= self.expires_at:
            raise CodeExpired()
        if self.wrong_attempts_left <= 0:
            raise CodeBurned()
        if self.uses_left <= 0:
            raise CodeUsedUp()
        if self.uses_left - self.in_flight <= 0:
            # Every use is held by an exchange still running, which may give it back (a
            # wrong guess): the joiner tries again shortly, and then hears the real cause.
            raise CodeBusy()

    def reserve_guess(self, now: float) -> None:
        """Before the host answers a PAKE message: hold one wrong attempt for it."""
        if now >= self.expires_at:
            raise CodeExpired()
        if self.wrong_attempts_left - self.guesses_in_flight <= 0:
            raise CodeBusy() if self.guesses_in_flight else CodeBurned()
        self.guesses_in_flight += 1

    def retirement(self, now: float) -> P2PError | None:
        """Why nothing can happen on this code anymore; None while it is alive.

        An exchange in flight keeps it alive: it may still use the code or give it back.
        """
        if self.in_flight:
            return None
        if self.wrong_attempts_left <= 0:
            return CodeBurned()
        if self.uses_left <= 0:
            return CodeUsedUp()
        if now >= self.expires_at:
            return CodeExpired()
        return None

    def status(self, now: float) -> dict[str, object]:
        return {
            "nameplate": self.nameplate,
            "uses_left": self.uses_left,
            "wrong_attempts_left": self.wrong_attempts_left,
            "wrong_attempts_used": self.wrong_attempts_used,
            "expires_in_s": max(0.0, self.expires_at - now),
        }


@dataclass(frozen=True)
class Retired:
    """An invitation that can no longer be used, and why (shown to the sharer and joiners)."""

    share_id: bytes
    nameplate: str
    reason: P2PError
    wrong_attempts_used: int
    expires_at: float

    def status(self) -> dict[str, object]:
        return {
            "nameplate": self.nameplate,
            "reason": _REASONS.get(type(self.reason), "withdrawn"),
            "wrong_attempts_used": self.wrong_attempts_used,
        }


_REASONS: dict[type[P2PError], str] = {
    CodeBurned: "burned",
    CodeUsedUp: "used",
    CodeExpired: "expired",
}


class Invitations:
    """The open invitations of this daemon, by nameplate."""

    def __init__(self) -> None:
        self._by_nameplate: dict[str, Invitation] = {}
        self._retired: dict[str, Retired] = {}

    def create(self, share_id: bytes, words: int, lifetime_s: float, uses: int) -> Invitation:
        self.expire()
        nameplate = pick_nameplate(self._by_nameplate.keys() | self._retired.keys())
        invitation = Invitation(
            generate_code(nameplate, words), share_id, time.time() + lifetime_s, uses
        )
        self._by_nameplate[nameplate] = invitation
        return invitation

    def find(self, nameplate: str) -> Invitation:
        """The usable invitation on ``nameplate``; raises the error the joiner should see."""
        invitation = self._by_nameplate.get(nameplate)
        if invitation is None:
            retired = self._retired.get(nameplate)
            raise retired.reason if retired is not None else NoSuchInvitation()
        invitation.check_usable(time.time())
        return invitation

    def begin(self, invitation: Invitation) -> None:
        """An exchange starts: it holds one use until it ends."""
        invitation.in_flight += 1

    def reserve_guess(self, invitation: Invitation) -> None:
        """The exchange's PAKE message is about to be answered: reserve an attempt for it."""
        invitation.reserve_guess(time.time())

    def end(self, invitation: Invitation, *, guessed: bool, proven: bool, peer: object) -> None:
        """Settle an exchange: a guess costs an attempt unless proven; a proof costs a use."""
        invitation.in_flight -= 1
        if guessed:
            invitation.guesses_in_flight -= 1
            if proven:
                invitation.uses_left -= 1
            else:
                self._count_wrong_attempt(invitation, peer)
        self.expire()

    @staticmethod
    def _count_wrong_attempt(invitation: Invitation, peer: object) -> None:
        invitation.wrong_attempts_left -= 1
        logger.warning(
            "a join with invitation %s from %s did not prove the code: %d of %d attempts left",
            invitation.nameplate,
            peer,
            invitation.wrong_attempts_left,
            WRONG_ATTEMPTS_ALLOWED,
        )
        if invitation.wrong_attempts_left <= 0:
            logger.warning(
                "invitation %s burned after %d failed attempts: nobody can join with it; "
                "make a new one with p2prtc invite",
                invitation.nameplate,
                WRONG_ATTEMPTS_ALLOWED,
            )

    def expire(self) -> None:
        """Retire invitations that can no longer be used, remembering why."""
        now = time.time()
        for nameplate, invitation in list(self._by_nameplate.items()):
            reason = invitation.retirement(now)
            if reason is not None:
                del self._by_nameplate[nameplate]
                self._retired[nameplate] = Retired(
                    invitation.share_id,
                    nameplate,
                    reason,
                    invitation.wrong_attempts_used,
                    invitation.expires_at,
                )
        while len(self._retired) > MAX_RETIRED:
            del self._retired[next(iter(self._retired))]

    def for_share(self, share_id: bytes) -> Iterable[Invitation]:
        return [i for i in self._by_nameplate.values() if i.share_id == share_id]

    def retired_for_share(self, share_id: bytes) -> Iterable[Retired]:
        return [r for r in self._retired.values() if r.share_id == share_id]

    def drop_share(self, share_id: bytes) -> None:
        for invitation in self.for_share(share_id):
            del self._by_nameplate[invitation.nameplate]

    def nameplates(self) -> list[str]:
        """The nameplates to offer: open invitations, and until they would have expired the
        retired ones too, so a joiner learns at once why its code no longer works."""
        self.expire()
        now = time.time()
        retired = [r.nameplate for r in self._retired.values() if r.expires_at > now]
        return sorted([*self._by_nameplate, *retired])
