"""Membership: who belongs to a share, removing a member, and spreading a rotated secret.

Removing a member rotates the share's secret (a new generation) and hands it, over the
authenticated connections, to the members that remain; they pass it on (REKEY frames).
Which rotation wins when several race is decided in core/membership.py; this service
applies its verdicts, answers the rotations it is asked to confirm, and makes `remove`
report whether the members it reached accepted the new secret.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from p2prtc.core.keys import new_secret
from p2prtc.core.membership import KeyState, Standing, Verdict, judge_rekey, rotate
from p2prtc.core.messages import BadMessage, Rekey
from p2prtc.core.sync import LeaveReason
from p2prtc.daemon.peer import PeerConnection
from p2prtc.daemon.registry import Registry
from p2prtc.daemon.share import Share
from p2prtc.errors import ExitCode, P2PError

logger = logging.getLogger(__name__)

# How long `remove` waits for the members it reached to confirm the new secret.
CONFIRM_TIMEOUT_S = 5.0


class NoSuchMember(P2PError):
    """No other member of this share has that id (see p2prtc members)."""

    exit_code = ExitCode.NOT_SHARED


class RemovalNotConfirmed(P2PError):
    """The member was removed here, but not every member reached accepted the new secret."""


class Membership:
    """Members of our shares and their secrets' rotation."""

    def __init__(self, daemon_id: str, registry: Registry) -> None:
        self._daemon_id = daemon_id
        self._registry = registry
        # (share id, peer, generation) -> the answer `remove` waits for
        self._pending: dict[tuple[bytes, str, int], asyncio.Future[bool]] = {}

    def members(self, share: Share) -> list[dict[str, Any]]:
        connected = {c.peer_id for c in self._registry.connections.all() if c.is_open}
        names = self._registry.names
        return [
            {
                "id": member,
                "name": names.get(member),
                "self": member == self._daemon_id,
                "connected": member in connected,
            }
            for member in share.record.members
        ]

    async def remove(self, share: Share, prefix: str) -> dict[str, Any]:
        """Drop a member and rotate the secret, so the removed daemon cannot reconnect.

        Returns once the members we are connected to confirmed the new secret; raises
        RemovalNotConfirmed when one refused it or did not answer.
        """
        matches = [m for m in share.record.members if m.startswith(prefix) and m != self._daemon_id]
        if len(matches) != 1:
            raise NoSuchMember(prefix if not matches else f"{prefix} is ambiguous")
        (removed,) = matches
        state = rotate(share.record.key_state(), removed, new_secret(), self._daemon_id)
        self._hold(share, state)
        answers = await self._spread(share, exclude=None, want_reply=True)
        await self._registry.changed()
        logger.info("removed member %s from %s and rotated its secret", removed, share.path)
        # A member removed meanwhile (a concurrent removal) owes us no answer.
        refused = [p for p in await self._collect(answers) if p in share.record.members]
        offline = [m for m in share.record.members if m != self._daemon_id and m not in answers]
        if refused:
            raise RemovalNotConfirmed(
                f"{removed} is removed here, but {', '.join(refused)} did not accept the new "
                "secret: they are cut off too until invited again (p2prtc invite)"
            )
        return {"removed": removed, "members": share.record.members, "not_reached": offline}

    async def _collect(self, answers: dict[str, asyncio.Future[bool]]) -> list[str]:
        """The members among ``answers`` that refused or did not answer in time."""
        if answers:
            await asyncio.wait(answers.values(), timeout=CONFIRM_TIMEOUT_S)
        refused = [
            peer for peer, answer in answers.items() if not (answer.done() and answer.result())
        ]
        for key in [k for k, future in self._pending.items() if future in answers.values()]:
            del self._pending[key]
        return refused

    def _hold(self, share: Share, state: KeyState) -> None:
        share.record.adopt(state)
        share.record.save(self._registry.home)

    async def _spread(
        self, share: Share, exclude: str | None, *, want_reply: bool = False
    ) -> dict[str, asyncio.Future[bool]]:
        """Our key state to connected members; connections to non-members drop the share.

        With ``want_reply``, one future per member told, resolved by its answer.
        """
        payload = self._rekey(share, want_reply=want_reply).encode()
        answers: dict[str, asyncio.Future[bool]] = {}
        for connection in self._registry.connections.peers_of(share):
            if connection.peer_id not in share.record.members:
                await connection.remove_doc(share.share_id, LeaveReason.REMOVED)
            elif connection.peer_id != exclude:
                if want_reply:
                    key = (share.share_id, connection.peer_id, share.record.generation)
                    answers[connection.peer_id] = self._pending[key] = (
                        asyncio.get_running_loop().create_future()
                    )
                await connection.control.send_rekey(share.share_id, payload)
        return answers

    def _rekey(
        self,
        share: Share,
        *,
        want_reply: bool = False,
        reply_to: Rekey | None = None,
        accepted: bool = False,
    ) -> Rekey:
        state = share.record.key_state()
        return Rekey(
            state.secret,
            state.generation,
            state.members,
            state.removed,
            state.author,
            want_reply=want_reply,
            reply_to=None if reply_to is None else reply_to.generation,
            accepted=accepted,
        )

    async def on_rekey(self, connection: PeerConnection, share_id: bytes, payload: bytes) -> None:
        """A member sent a share's key state (the connections' ``on_rekey``)."""
        share = self._registry.shares.get(share_id)
        try:
            rekey = Rekey.decode(payload)
        except BadMessage as exc:
            await connection.fail(f"malformed REKEY: {exc.detail}")
            return
        if share is None:
            return
        theirs = KeyState(
            rekey.generation, rekey.secret, rekey.members, rekey.removed, rekey.author
        )
        judgement = judge_rekey(
            share.record.key_state(), theirs, connection.peer_id, self._daemon_id
        )
        if rekey.reply_to is not None:
            self._answered(share, connection.peer_id, rekey.reply_to, rekey.accepted)
        await self._apply(share, connection, judgement.verdict, judgement.state, rekey)
        if judgement.rotate_again:
            # The winning secret may be known to a daemon a losing rotation removed.
            self._hold(share, rotate(share.record.key_state(), "", new_secret(), self._daemon_id))
            logger.info("rotated the secret of %s again: a concurrent removal", share.path)
            await self._spread(share, exclude=None)
        if rekey.want_reply:
            answer = self._rekey(share, reply_to=rekey, accepted=judgement.accepted)
            await connection.control.send_rekey(share.share_id, answer.encode())

    def _answered(self, share: Share, peer: str, generation: int, accepted: bool) -> None:
        future = self._pending.get((share.share_id, peer, generation))
        if future is not None and not future.done():
            future.set_result(accepted)

    async def _apply(
        self, share: Share, sender: PeerConnection, verdict: Verdict, state: KeyState, rekey: Rekey
    ) -> None:
        peer = sender.peer_id
        if verdict is Verdict.ADOPT:
            self._hold(share, state)
            logger.info(
                "the secret of %s was rotated (generation %d)", share.path, state.generation
            )
            await self._spread(share, exclude=peer)
            await self._registry.changed()
        elif verdict is Verdict.STALE:
            logger.warning(
                "refused an outdated key rotation of %s from %s (generation %d, ours %d): "
                "sending it ours",
                share.path,
                sender.label,
                rekey.generation,
                share.record.generation,
            )
            if not rekey.want_reply:  # a reply carries ours anyway
                await sender.control.send_rekey(share.share_id, self._rekey(share).encode())
        elif verdict is Verdict.NOT_FROM_A_MEMBER:
            logger.warning(
                "refused a key rotation of %s from %s: removed member", share.path, sender.label
            )
        elif verdict is Verdict.REMOVED:
            logger.warning(
                "%s: this daemon was removed from the share by %s", share.path, sender.label
            )
            share.record.told_cut_off(Standing.REMOVED, peer)
            share.record.save(self._registry.home)
