"""Joining: handing out invitations, hosting a joiner's exchange, and redeeming a join code.

The inviting side creates an invitation and, when a joiner dials with its nameplate, runs
the PAKE on the code and sends the sealed welcome. The joining side finds a daemon offering
the nameplate, runs the PAKE, and opens the share from the welcome until a member syncs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2prtc import paths
from p2prtc.adapters.rendezvous import ConnectFailed, RendezvousError
from p2prtc.adapters.store import UpdateStore
from p2prtc.core.codes import JoinCode, parse_code
from p2prtc.core.framing import Progress
from p2prtc.core.handshake import INVITE_VERSION, InviteHost, InviteJoiner, Refused, Welcomed
from p2prtc.core.keys import invite_topic
from p2prtc.core.messages import Reply, Welcome
from p2prtc.daemon.control import Report
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
from p2prtc.daemon.search import SearchPlan
from p2prtc.daemon.share import Share, ShareState
from p2prtc.daemon.state import ShareRecord
from p2prtc.errors import ExitCode, P2PError, describe

logger = logging.getLogger(__name__)

# A joiner told the code is busy (other joins being judged) waits this long, jittered.
CODE_BUSY_RETRY_S = (0.1, 0.5)
# While no daemon offers the nameplate yet, the LAN is asked this often (a unicast-answer
# mDNS query): a lost first answer costs a quarter second, not zeroconf's 1 s backoff.
LAN_QUERY_INTERVAL_S = 0.25
# Daemons reached that do not know the code (those named in P2PRTC_PEERS are asked about any
# code) end the search this long after it began, unless another one offers it first: at once
# when nothing else could (no mDNS, no relay).
UNKNOWN_GRACE_S = 1.0
# A daemon that could not be reached (maybe starting), or whose exchange broke off (a busy
# inviter's handshake timed out, a lost ARP reply), is tried again after this long.
UNREACHABLE_RETRY_S = 1.0
# Broken-off exchanges retried per daemon: each may have cost the code one of its 3 attempts
# (the PAKE answered, no confirmation seen), so a retrying joiner never burns it by itself.
BROKEN_EXCHANGE_RETRIES = 1
# A join reports how far the notebook has come this often.
PROGRESS_INTERVAL_S = 0.1
PARKED_WELCOME_S = 15 * 60.0
MAX_PARKED_WELCOMES = 16


class DestinationFolderMissing(P2PError):
    """The destination folder does not exist; create it or pick another destination."""


class NobodyOffersCode(P2PError):
    """No daemon offering this join code was found"""

    exit_code = ExitCode.CODE_REFUSED


class IncompatibleInviter(P2PError):
    """The daemon offering this code runs another version of p2prtc: upgrade both machines."""


class JoinTimedOut(P2PError):
    """No member of the share could be reached to sync the notebook"""


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
        receiving_over_pipe: Callable[[bytes], Progress | None],
    ) -> None:
        self._daemon_id = daemon_id
        self._registry = registry
        self._invitations = invitations
        self._discovery = discovery
        self._relay = relay
        self._wake = wake
        # Loads the WebRTC stack in a thread: started only for a join through a relay, whose
        # state comes over a link; on the LAN the state comes over the rendezvous pipe, and
        # the import, competing for the interpreter, would slow the join it does not serve.
        self._prepare_links = prepare_links
        # How far a share's first state has come over a rendezvous pipe (Dialer.receiving).
        self._receiving_over_pipe = receiving_over_pipe
        self._parked = ParkedWelcomes()

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

    async def join(self, request: dict[str, Any], report: Report) -> dict[str, Any]:
        code = parse_code(str(request["code"]))
        logger.debug("join: looking for nameplate %s", code.nameplate)
        force = bool(request.get("force"))
        dest = Path(request["dest"]) if request.get("dest") else None
        if dest is not None:
            self._check_destination(dest)
        started = time.monotonic()
        deadline = started + float(request.get("timeout_s", 60))
        welcome = self._parked.pop(code) or await self._redeem(code, deadline, report)
        record = self._record_from_welcome(welcome, dest, Path(str(request.get("cwd", "."))))
        self._check_destination(record.path)
        report({"phase": "welcomed", "name": record.name, "path": str(record.path)})
        adopting = record.path.exists() and not force  # kept only if it holds the notebook
        share = await self._open_joining_share(record, keep_other_file=not force)
        await self._wait_until_written(share, deadline, report)
        if share.refused is not None:
            await self._registry.close_share(share)  # nothing written: the file stays as it is
            await self._registry.changed()
            self._parked.put(code, welcome)
            raise share.refused
        return {
            "path": str(record.path),
            "share_id": record.share_id.hex(),
            "bytes": record.path.stat().st_size,
            "adopted": adopting,
            "seconds": round(time.monotonic() - started, 3),
        }

    def _check_destination(self, dest: Path) -> None:
        if self._registry.share_for_path(dest) is not None:
            raise AlreadyShared(str(dest))
        if not dest.parent.is_dir():
            raise DestinationFolderMissing(str(dest.parent))

    async def _open_joining_share(self, record: ShareRecord, *, keep_other_file: bool) -> Share:
        home = self._registry.home
        paths.make_private_dir(record.folder(home))
        record.save(home)
        store = UpdateStore(record.store_path(home))
        file = SharedFile.empty(record.path, store, self._daemon_id)
        share = self._registry.open_share(record, file, ShareState.JOINING)
        share.keep_other_file = keep_other_file
        await self._registry.changed()
        self._wake.set()
        return share

    async def _wait_until_written(self, share: Share, deadline: float, report: Report) -> None:
        """Until the joined file is on disk (or refused); reports each member connected and
        how far the notebook's state has come in."""
        shown: set[str] = set()
        last: dict[str, Any] | None = None
        waited_from = time.monotonic()
        deadline = max(deadline, waited_from + PROGRESS_INTERVAL_S)  # a search that took it all
        while not share.ready.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                sought = [m[:8] for m in share.record.members if m != self._daemon_id]
                tried = self._discovery.search_plan().explain(
                    time.monotonic() - waited_from, [f"members not reached: {', '.join(sought)}"]
                )
                problem = f"{share.last_error}; " if share.last_error else ""
                raise JoinTimedOut(f"{problem}still trying in the background; {tried}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(share.ready.wait(), min(PROGRESS_INTERVAL_S, remaining))
            incoming = [self._receiving_over_pipe(share.share_id)]
            # The member the state came from over a pipe first: its link may come later.
            members = [share.state_from] if share.state_from else []
            for connection in self._registry.connections.peers_of(share):
                members.append(connection.status())
                incoming.append(connection.sync.receiving(share.share_id))
            for member in members:
                if member["id"] not in shown:
                    shown.add(member["id"])
                    report({"phase": "connected", **member})
            for progress in incoming:
                if progress is not None:
                    event = {
                        "phase": "receiving",
                        "received": progress.received,
                        "expected": progress.expected,
                    }
                    if event != last:
                        report(event)
                        last = event

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

    async def _redeem(self, code: JoinCode, deadline: float, report: Report) -> bytes:
        """Find the daemon offering ``code`` and run the PAKE with it; the sealed welcome."""
        topic = invite_topic(code.nameplate)
        await self._relay.look_for_invitation(topic)
        plan = self._discovery.search_plan()
        report(plan.event())
        try:
            return await self._redeem_until(code, deadline, topic, plan, report)
        finally:
            await self._relay.stop_looking(topic)

    async def _redeem_until(
        self, code: JoinCode, deadline: float, topic: str, plan: SearchPlan, report: Report
    ) -> bytes:
        search = _Search(grace_s=UNKNOWN_GRACE_S if plan.mdns or plan.relays else 0.0)
        next_probe = next_lan_query = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_probe:
                await self._relay.ask_for_invitation(topic)
                next_probe = time.monotonic() + 1.0
            if time.monotonic() >= next_lan_query:
                self._discovery.lan.look_again()  # nothing offers it yet: ask the LAN again
                next_lan_query = time.monotonic() + LAN_QUERY_INTERVAL_S
            for endpoint in self._discovery.endpoints_offering(code.nameplate, topic):
                if not search.may_ask(endpoint):
                    continue
                try:
                    return await self._redeem_at(endpoint, code, report)
                except CodeBusy:
                    # Other joins on this code are being judged: ours waits its turn.
                    logger.info("redeeming at %s: the code is busy, trying again", endpoint.key)
                    await asyncio.sleep(random.uniform(*CODE_BUSY_RETRY_S))
                except (NoSuchInvitation, RendezvousError, TimeoutError) as exc:
                    search.answered(endpoint, exc)
            search.give_up_if_unknown()
            await asyncio.sleep(0.1)
        plan = self._discovery.search_plan()  # relays may have connected meanwhile
        raise NobodyOffersCode(plan.explain(search.elapsed(), search.answers()))

    async def _redeem_at(self, endpoint: Endpoint, code: JoinCode, report: Report) -> bytes:
        pipe = await endpoint.open_pipe()
        report({"phase": "found", "at": endpoint.where})
        if not pipe.direct:
            self._prepare_links()
        try:
            await pipe.send(envelope("invite", nameplate=code.nameplate))
            reply = await expect_ok(pipe)
            if reply.invite_version != INVITE_VERSION:
                raise IncompatibleInviter(
                    f"it speaks invitation version {reply.invite_version or 1}, "
                    f"this one {INVITE_VERSION}"
                )
            report({"phase": "verifying", "at": endpoint.where})
            try:
                welcomed = await run_handshake(pipe, InviteJoiner(code))
            except Refused as refused:
                raise remote_error(refused.kind) from None
            assert isinstance(welcomed, Welcomed)
            return welcomed.payload
        finally:
            await pipe.close()


class _Search:
    """What the daemons asked about a code answered, and whom to ask again when."""

    def __init__(self, grace_s: float) -> None:
        self._started = time.monotonic()
        self._grace_s = grace_s  # how long daemons that do not know the code wait for others
        self._answers: dict[str, str] = {}  # endpoint key -> where it is, what it answered
        self._unknown: list[str] = []  # where daemons said they do not know the code
        self._ask_at: dict[str, float] = {}  # endpoint key -> when to ask again (inf: never)
        self._broken: dict[str, int] = {}  # endpoint key -> exchanges that broke off

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def may_ask(self, endpoint: Endpoint) -> bool:
        return time.monotonic() >= self._ask_at.get(endpoint.key, 0.0)

    def answered(self, endpoint: Endpoint, error: P2PError | TimeoutError) -> None:
        """An endpoint failed to redeem the code. Asked again only when it could not be
        reached (its daemon may be starting): once something was sent, a broken-off
        exchange may have cost the code an attempt."""
        said = describe(error)
        if isinstance(error, NoSuchInvitation):
            said = "does not know the code"
            self._unknown.append(endpoint.where)
        self._answers[endpoint.key] = f"{endpoint.where}: {said}"
        retry = isinstance(error, ConnectFailed) or self._may_retry_broken(endpoint.key, error)
        self._ask_at[endpoint.key] = time.monotonic() + UNREACHABLE_RETRY_S if retry else math.inf
        logger.info(
            "redeeming at %s: %s%s", endpoint.key, describe(error), "; trying again" * retry
        )

    def _may_retry_broken(self, key: str, error: P2PError | TimeoutError) -> bool:
        """A broken-off exchange (not an answer): retried a bounded number of times, or a
        join whose only inviter failed once would end in "no daemon offers this code"."""
        if isinstance(error, NoSuchInvitation):
            return False
        self._broken[key] = self._broken.get(key, 0) + 1
        return self._broken[key] <= BROKEN_EXCHANGE_RETRIES

    def give_up_if_unknown(self) -> None:
        """The daemons reached do not know the code and nobody else offered it meanwhile."""
        if self._unknown and self.elapsed() >= self._grace_s:
            raise NoSuchInvitation("asked " + ", ".join(self._unknown))

    def answers(self) -> list[str]:
        return list(self._answers.values())


class ParkedWelcomes:
    """Welcomes redeemed by a join that was then refused (its destination held another
    file): the retry with --force or another DEST reuses the welcome instead of the code,
    which the sharer counted as used. Memory only, for a while, a few at most."""

    def __init__(self) -> None:
        self._by_code: dict[str, tuple[float, bytes]] = {}

    def put(self, code: JoinCode, welcome: bytes) -> None:
        now = time.monotonic()
        self._by_code = {
            key: kept for key, kept in self._by_code.items() if now - kept[0] < PARKED_WELCOME_S
        }
        self._by_code[str(code)] = (now, welcome)
        while len(self._by_code) > MAX_PARKED_WELCOMES:
            del self._by_code[next(iter(self._by_code))]

    def pop(self, code: JoinCode) -> bytes | None:
        kept = self._by_code.pop(str(code), None)
        if kept is None or time.monotonic() - kept[0] >= PARKED_WELCOME_S:
            return None
        return kept[1]
