"""Running the sans-IO handshakes over a rendezvous pipe, and the pipe's opening envelope.

A dialler's first message says what it wants (``invite`` with a nameplate, or ``member``);
the listener answers ``ok`` or the error the dialler should report. Then handshake messages
flow as raw bytes, and after a member handshake the SDP offer and answer, sealed.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from p2prtc.core.handshake import Authenticated, Failed, Joined, SendMessage, Welcomed
from p2prtc.daemon.invitations import (
    CodeBurned,
    CodeBusy,
    CodeExpired,
    CodeUsedUp,
    NoSuchInvitation,
)
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

ENVELOPE_VERSION = 1
HANDSHAKE_TIMEOUT_S = 10.0
_MAX_ENVELOPE = 1024


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


def envelope(kind: str, **fields: str) -> bytes:
    return json.dumps({"v": ENVELOPE_VERSION, "kind": kind, **fields}).encode()


def parse_envelope(data: bytes) -> dict[str, Any]:
    """The dialler's opening message; raises HandshakePeerError for anything malformed."""
    try:
        message = json.loads(data[:_MAX_ENVELOPE]) if len(data) <= _MAX_ENVELOPE else None
    except (ValueError, UnicodeDecodeError):
        message = None
    if not isinstance(message, dict) or message.get("v") != ENVELOPE_VERSION:
        raise HandshakePeerError("malformed or unsupported opening message")
    return message


def ok_reply() -> bytes:
    return json.dumps({"ok": True}).encode()


def error_reply(error: P2PError) -> bytes:
    return json.dumps({"ok": False, "kind": type(error).__name__}).encode()


async def expect_ok(pipe: BytePipe, timeout: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Wait for the listener's answer to our envelope; raise the error it reports."""
    try:
        reply = json.loads(await pipe.recv(timeout))
    except (ValueError, UnicodeDecodeError):
        raise HandshakePeerError("malformed answer") from None
    if not isinstance(reply, dict):
        raise HandshakePeerError("malformed answer")
    if reply.get("ok") is True:
        return
    raise remote_error(str(reply.get("kind")))


def remote_error(kind: str) -> P2PError:
    """The error the other daemon reported by name (anything unknown: a broken-off handshake)."""
    return _REMOTE_ERRORS.get(kind, HandshakePeerError)()
