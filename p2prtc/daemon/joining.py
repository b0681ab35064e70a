"""Joining: handing out invitations, hosting a joiner's exchange, and redeeming a join code.

The inviting side creates an invitation and, when a joiner dials with its nameplate, runs
the PAKE on the code and sends the sealed welcome. The joining side finds a daemon offering
the nameplate, runs the PAKE, and opens the share from the welcome until a member syncs it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2prtc import paths
from p2prtc.adapters.rendezvous import RendezvousError
from p2prtc.adapters.store import UpdateStore
from p2prtc.core.codes import JoinCode, parse_code
from p2prtc.core.handshake import INVITE_VERSION, InviteHost, InviteJoiner, Refused, Welcomed
from p2prtc.core.keys import invite_topic
from p2prtc.core.messages import Reply, Welcome
from p2prtc.daemon.discovery import Discovery
from p2prtc.daemon.document import SharedFile
from p2prtc.daemon.endpoints import Endpoint
from p2prtc.daemon.invitations import CodeBusy, Invitations, NoSuchInvitation
from p2prtc.daemon.pipes import (
    BytePipe,
    envelope,
    error_reply,
    expect_ok,
    remote_error,
    run_handshake,
)
from p2prtc.daemon.registry import AlreadyShared, Registry
from p2prtc.daemon.relay_presence import RelayPresence
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import ExitCode, P2PError, describe

logger = logging.getLogger(__name__)

# A joiner told the code is busy (other joins being judged) waits this long, jittered.
CODE_BUSY_RETRY_S = (0.1, 0.5)
# While no daemon offers the nameplate yet, the LAN is asked this often (a unicast-answer
# mDNS query): a lost first answer costs a quarter second, not zeroconf's 1 s backoff.
LAN_QUERY_INTERVAL_S = 0.25


class DestinationExists(P2PError):
    """The destination file exists and differs; pass --force to replace it."""

    exit_code = ExitCode.DESTINATION_EXISTS


class IncompatibleInviter(P2PError):
    """The daemon offering this code runs another version of p2prtc: upgrade both machines."""


class JoinTimedOut(P2PError):
    """No member of the share could be reached to sync the notebook; still trying (see status)."""


class Joining:
    """Both sides of an invitation."""

    def __init__(
        self,
        daemon_id: str,
        registry: Registry,
        invitations: Invitations,
        discovery: Discovery,
        relay: RelayPresence,
        wake: asyncio.Event,
        prepare_links: Callable[[], None],
    ) -> None:
        self._daemon_id = daemon_id
        self._registry = registry
        self._invitations = invitations
        self._discovery = discovery
        self._relay = relay
        self._wake = wake
        self._prepare_links = prepare_links  # a join ends with a WebRTC link: load it now

    # --- the inviting side ---------------------------------------------------------------

    async def invite(self, share: Share, request: dict[str, Any]) -> dict[str, Any]:
        invitation = self._invitations.create(
            share.share_id,
            words=int(request.get("words", 2)),
            lifetime_s=float(request.get("expires_s", 900)),
            uses=int(request.get("uses", 1)),
        )
        await self._registry.changed()
        return {"code": str(invitation.code), "expires_at": invitation.expires_at}

    async def host_invitation(self, pipe: BytePipe, nameplate: str) -> None:
        try:
            invitation = self._invitations.find(nameplate)
        except P2PError as exc:
            await pipe.send(error_reply(exc))
            return
        share = self._registry.shares[invitation.share_id]
        self._invitations.begin(invitation)  # so two joiners cannot both use a 1-use code
        host = InviteHost(
            invitation.code,
            self._welcome_for(share),
            admit=lambda: self._invitations.reserve_guess(invitation),
        )
        try:
            await pipe.send(Reply(invite_version=INVITE_VERSION).encode())
            await run_handshake(pipe, host)
            logger.info("a new member joined %s", share.path)
        finally:
            # Settled whatever ended the exchange: a closed pipe, junk or a timeout after
            # the PAKE answer costs an attempt like a wrong confirmation does.
            self._invitations.end(
                invitation, guessed=host.guessed, proven=host.proven, peer=pipe.remote_address
            )
            await self._registry.changed()

    @staticmethod
    def _welcome_for(share: Share) -> bytes:
        return Welcome(
            share_id=share.share_id,
            secret=share.record.secret,
            name=share.record.name,
            members=tuple(share.record.members),
            generation=share.record.generation,
            removed=frozenset(share.record.removed.items()),
        ).encode()

    # --- the joining side ----------------------------------------------------------------

    async def join(self, request: dict[str, Any]) -> dict[str, Any]:
        code = parse_code(str(request["code"]))
        self._prepare_links()
        force = bool(request.get("force"))
        dest = Path(request["dest"]) if request.get("dest") else None
        if dest is not None:
            self._check_destination(dest, force)
        deadline = time.monotonic() + float(request.get("timeout_s", 60))
        welcome = await self._redeem(code, deadline)
        record = self._record_from_welcome(welcome, dest, Path(str(request.get("cwd", "."))))
        self._check_destination(record.path, force)
        home = self._registry.home
        paths.make_private_dir(record.folder(home))
        record.save(home)
        store = UpdateStore(record.store_path(home))
        file = SharedFile.empty(record.path, store, self._daemon_id)
        share = self._registry.open_share(record, file, ShareState.JOINING)
        await self._registry.changed()
        self._wake.set()
        try:
            await asyncio.wait_for(share.ready.wait(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            raise JoinTimedOut(share.last_error) from None
        return {"path": str(record.path), "share_id": record.share_id.hex()}

    def _check_destination(self, dest: Path, force: bool) -> None:
        if self._registry.share_for_path(dest) is not None:
            raise AlreadyShared(str(dest))
        if dest.exists() and not force:
            raise DestinationExists(str(dest))

    def _record_from_welcome(self, payload: bytes, dest: Path | None, cwd: Path) -> ShareRecord:
        """The new share's record; a welcome that is not exactly valid is refused whole."""
        welcome = Welcome.decode(payload)  # its name is a plain file name, never a path
        shares = self._registry.shares
        if welcome.share_id in shares:
            raise AlreadyShared(str(shares[welcome.share_id].path))
        others = [m for m in welcome.members if m != self._daemon_id]
        return ShareRecord(
            share_id=welcome.share_id,
            secret=welcome.secret,
            path=dest or cwd / welcome.name,
            name=welcome.name,
            members=[*others, self._daemon_id],
            generation=welcome.generation,
            removed=dict(welcome.removed),
        )

    async def _redeem(self, code: JoinCode, deadline: float) -> bytes:
        """Find the daemon offering ``code`` and run the PAKE with it; the sealed welcome."""
        tried: set[str] = set()
        topic = invite_topic(code.nameplate)
        await self._relay.look_for_invitation(topic)
        try:
            return await self._redeem_until(code, deadline, tried, topic)
        finally:
            await self._relay.stop_looking(topic)

    async def _redeem_until(
        self, code: JoinCode, deadline: float, tried: set[str], topic: str
    ) -> bytes:
        next_probe = next_lan_query = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_probe:
                await self._relay.ask_for_invitation(topic)
                next_probe = time.monotonic() + 1.0
            if time.monotonic() >= next_lan_query:
                self._discovery.look_again()  # nothing offers it yet: ask the LAN again
                next_lan_query = time.monotonic() + LAN_QUERY_INTERVAL_S
            for endpoint in self._discovery.endpoints_offering(code.nameplate, topic):
                if endpoint.key in tried:
                    continue
                tried.add(endpoint.key)
                try:
                    return await self._redeem_at(endpoint, code)
                except CodeBusy:
                    # Other joins on this code are being judged: ours waits its turn.
                    logger.info("redeeming at %s: the code is busy, trying again", endpoint.key)
                    tried.discard(endpoint.key)
                    await asyncio.sleep(random.uniform(*CODE_BUSY_RETRY_S))
                except (NoSuchInvitation, RendezvousError, TimeoutError) as exc:
                    logger.info("redeeming at %s: %s", endpoint.key, describe(exc))
                    continue
            await asyncio.sleep(0.1)
        raise NoSuchInvitation()

    async def _redeem_at(self, endpoint: Endpoint, code: JoinCode) -> bytes:
        pipe = await endpoint.open_pipe()
        try:
            await pipe.send(envelope("invite", nameplate=code.nameplate))
            reply = await expect_ok(pipe)
            if reply.invite_version != INVITE_VERSION:
                raise IncompatibleInviter(
                    f"it speaks invitation version {reply.invite_version or 1}, "
                    f"this one {INVITE_VERSION}"
                )
            try:
                welcomed = await run_handshake(pipe, InviteJoiner(code))
            except Refused as refused:
                raise remote_error(refused.kind) from None
            assert isinstance(welcomed, Welcomed)
            return welcomed.payload
        finally:
            await pipe.close()
