"""Talking over a rendezvous pipe (a LAN WebSocket or a relay topic): what flows, in order.

A dialler's first message says what it wants (``Opening``: ``invite`` with a nameplate, or
``member``); the listener answers ``ok`` or the error the dialler should report (``Reply``).
Then the messages of a sans-IO handshake (core/handshake.py) flow as raw bytes, driven by
``run_handshake``; after a member handshake, on a LAN pipe between daemons that both name
the feature, the share's first sync round (core/pipesync.py, ``run_pipe_sync``), then the
SDP offer and answer, sealed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from p2prtc.core.handshake import Authenticated, Failed, Joined, SendMessage, Welcomed
from p2prtc.core.messages import Opening, OpeningKind, Reply
from p2prtc.core.pipesync import PipeSync
from p2prtc.daemon.invitations import (
    CodeBurned,
    CodeBusy,
    CodeExpired,
    CodeUsedUp,
    NoSuchInvitation,
)
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
# The whole first sync round over a pipe: a 64 MiB state at 1 MB/s, a slow Wi-Fi's pace.
PIPE_SYNC_TIMEOUT_S = 90.0


class TooManyPeers(P2PError):
    """The other daemon has as many connections as it accepts."""


_REMOTE_ERRORS: dict[str, type[P2PError]] = {
    cls.__name__: cls
    for cls in (NoSuchInvitation, CodeExpired, CodeUsedUp, CodeBurned, CodeBusy, TooManyPeers)
}


class HandshakePeerError(P2PError):
    """The other daemon broke off the handshake."""


class BytePipe(Protocol):
    """A LAN rendezvous WebSocket or a pipe over a signaling topic."""

    @property
    def remote_address(self) -> object: ...
    @property
    def direct(self) -> bool:
        """Straight to the other daemon (TCP on the LAN): it may carry a notebook's state.
        False through a signaling relay, which is for small messages only."""
        ...

    async def send(self, data: bytes) -> None: ...
    async def recv(self, timeout: float | None = None) -> bytes: ...
    async def close(self) -> None: ...


class Machine(Protocol):
    def start(self) -> list[bytes]: ...
    def receive(self, data: bytes) -> list[Any]: ...


async def run_handshake(
    pipe: BytePipe, machine: Machine, timeout: float = HANDSHAKE_TIMEOUT_S
) -> Welcomed | Joined | Authenticated:
    """Drive ``machine`` over ``pipe`` until it succeeds; raises its error when it fails."""
    for data in machine.start():
        await pipe.send(data)
    while True:
        outcome: Welcomed | Joined | Authenticated | None = None
        for event in machine.receive(await pipe.recv(timeout)):
            if isinstance(event, SendMessage):
                await pipe.send(event.data)
            elif isinstance(event, Failed):
                raise event.error
            else:
                outcome = event
        if outcome is not None:
            return outcome


async def run_pipe_sync(pipe: BytePipe, machine: PipeSync) -> None:
    """Run the first sync round (core/pipesync.py) over ``pipe`` until the peer's part is
    in (``machine.received``), within PIPE_SYNC_TIMEOUT_S. Sends while it receives: each
    side may be sending a big state, and one that only wrote would block the other."""
    await asyncio.wait_for(_pipe_sync(pipe, machine), PIPE_SYNC_TIMEOUT_S)


async def _pipe_sync(pipe: BytePipe, machine: PipeSync) -> None:
    sending = asyncio.create_task(_send_all(pipe, machine.start()))
    try:
        while not machine.done:
            reply = machine.receive(await pipe.recv(HANDSHAKE_TIMEOUT_S))
            await sending  # what was due before (our SyncStep1) goes first
            sending = asyncio.create_task(_send_all(pipe, reply))
        await sending
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)  # the reader's error is told


async def _send_all(pipe: BytePipe, messages: Iterable[bytes]) -> None:
    for message in messages:
        await pipe.send(message)


def envelope(kind: str, nameplate: str = "") -> bytes:
    """A dialler's opening message (``invite`` with ``nameplate=``, or ``member``)."""
    return Opening(OpeningKind(kind), nameplate).encode()


def ok_reply() -> bytes:
    return Reply().encode()


def error_reply(error: P2PError) -> bytes:
    return Reply(type(error).__name__).encode()


async def expect_ok(pipe: BytePipe, timeout: float = HANDSHAKE_TIMEOUT_S) -> Reply:
    """Wait for the listener's answer to our envelope; raise the error it reports."""
    reply = Reply.decode(await pipe.recv(timeout))
    if reply.error is not None:
        raise remote_error(reply.error)
    return reply


def remote_error(kind: str) -> P2PError:
    """The error the other daemon reported by name (anything unknown: a broken-off handshake)."""
    return _REMOTE_ERRORS.get(kind, HandshakePeerError)()
