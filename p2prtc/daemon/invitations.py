"""Invitations: short-lived join codes a share's owner hands out (kept in memory only)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from p2prtc.core.codes import JoinCode, generate_code, pick_nameplate
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

WRONG_ATTEMPTS_ALLOWED = 3


class NoSuchInvitation(P2PError):
    """No daemon offers this join code (it may have expired or been used)."""


class CodeExpired(P2PError):
    """This join code has expired; ask for a new one (p2prtc invite)."""


class CodeUsedUp(P2PError):
    """This join code has already been used; ask for a new one (p2prtc invite)."""


class CodeBurned(P2PError):
    """This join code was cancelled after too many wrong attempts; ask for a new one."""


# Retired nameplates remembered (with why) so a late joiner reads the real reason.
MAX_RETIRED = 256


@dataclass
class Invitation:
    code: JoinCode
    share_id: bytes
    expires_at: float
    uses_left: int
    wrong_attempts_left: int = WRONG_ATTEMPTS_ALLOWED
    in_flight: int = 0  # exchanges running now: each may use the code

    @property
    def nameplate(self) -> str:
        return self.code.nameplate

    def check_usable(self, now: float) -> None:
        """Whether one more exchange may start on this code."""
        if now >= self.expires_at:
            raise CodeExpired()
        if self.uses_left - self.in_flight <= 0 or self.wrong_attempts_left <= 0:
            raise CodeUsedUp()

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
            "expires_in_s": max(0.0, self.expires_at - now),
        }


class Invitations:
    """The open invitations of this daemon, by nameplate."""

    def __init__(self) -> None:
        self._by_nameplate: dict[str, Invitation] = {}
        self._retired: dict[str, P2PError] = {}

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
            raise self._retired.get(nameplate) or NoSuchInvitation()
        invitation.check_usable(time.time())
        return invitation

    def begin(self, invitation: Invitation) -> None:
        """An exchange starts: it holds one use until it ends."""
        invitation.in_flight += 1

    def end(self, invitation: Invitation, *, joined: bool, wrong_code: bool) -> None:
        invitation.in_flight -= 1
        if joined:
            invitation.uses_left -= 1
        if wrong_code:
            invitation.wrong_attempts_left -= 1
            logger.warning(
                "wrong join code for invitation %s: %d attempts left",
                invitation.nameplate,
                invitation.wrong_attempts_left,
            )
            if invitation.wrong_attempts_left <= 0:
                logger.warning("invitation %s burned after wrong codes", invitation.nameplate)
        self.expire()

    def expire(self) -> None:
        """Retire invitations that can no longer be used, remembering why."""
        now = time.time()
        for nameplate, invitation in list(self._by_nameplate.items()):
            reason = invitation.retirement(now)
            if reason is not None:
                del self._by_nameplate[nameplate]
                self._retired[nameplate] = reason
        while len(self._retired) > MAX_RETIRED:
            del self._retired[next(iter(self._retired))]

    def for_share(self, share_id: bytes) -> Iterable[Invitation]:
        return [i for i in self._by_nameplate.values() if i.share_id == share_id]

    def drop_share(self, share_id: bytes) -> None:
        for invitation in self.for_share(share_id):
            del self._by_nameplate[invitation.nameplate]

    def nameplates(self) -> list[str]:
        self.expire()
        return sorted(self._by_nameplate)
