"""Share authentication on an open connection: member handshakes carried in AUTH frames.

The connection was set up for one share; every further share the two daemons hold is
proven here, each handshake bound to the DTLS fingerprints of this very connection, so a
membership proof cannot be replayed onto another one. Sessions are numbered by a random id
and bounded in number.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from p2prtc.core.framing import Frame, FrameKind
from p2prtc.core.handshake import (
    Authenticated,
    Failed,
    HandshakeEvent,
    Lookup,
    MemberInitiator,
    MemberResponder,
    SendMessage,
)

logger = logging.getLogger(__name__)

AUTH_SESSION_ID_SIZE = 16
MAX_AUTH_SESSIONS = 64

# frame -> the data channel messages carrying it, queued to the peer
SendFrame = Callable[[list[Frame]], Awaitable[None]]
# the handshake succeeded: the peer proved it holds the share
OnAuthenticated = Callable[[Authenticated], Awaitable[None]]
# the peer broke the rules (too many sessions): disconnect with this reason
Fail = Callable[[str], Awaitable[None]]


class ShareAuth:
    """The AUTH sessions of one connection, in both directions."""

    def __init__(
        self,
        identity: str,
        lookup: Lookup,
        binding: bytes,
        *,
        send: SendFrame,
        on_authenticated: OnAuthenticated,
        fail: Fail,
    ) -> None:
        self.declined: set[bytes] = set()  # shares the peer said it does not hold
        self._identity = identity
        self._lookup = lookup
        self._binding = binding
        self._send = send
        self._on_authenticated = on_authenticated
        self._fail = fail
        self._sessions: dict[bytes, MemberInitiator | MemberResponder] = {}
        self._asked: dict[bytes, bytes] = {}  # session id -> share id we asked for

    def is_authenticating(self, share_id: bytes) -> bool:
        return share_id in self._asked.values()

    async def start(self, share_id: bytes, secret: bytes) -> None:
        """Prove our membership of ``share_id`` (the peer answers if it holds it too)."""
        if self.is_authenticating(share_id):
            return
        session = secrets.token_bytes(AUTH_SESSION_ID_SIZE)
        machine = MemberInitiator(share_id, secret, self._identity, self._binding)
        self._sessions[session] = machine
        self._asked[session] = share_id
        await self._send_messages(session, machine.start())

    async def receive(self, frame: Frame) -> None:
        """An AUTH frame from the peer: to its session, or a new one it starts."""
        session = frame.doc_id
        machine = self._sessions.get(session)
        if machine is None:
            if len(self._sessions) >= MAX_AUTH_SESSIONS:
                await self._fail("too many AUTH sessions")
                return
            machine = MemberResponder(self._lookup, self._identity, self._binding)
            self._sessions[session] = machine
            machine.start()
        await self._on_events(session, machine.receive(frame.payload))

    async def _send_messages(self, session: bytes, messages: list[bytes]) -> None:
        await self._send([Frame(FrameKind.AUTH, session, message) for message in messages])

    async def _on_events(self, session: bytes, events: list[HandshakeEvent]) -> None:
        for event in events:
            if isinstance(event, SendMessage):
                await self._send_messages(session, [event.data])
            elif isinstance(event, Authenticated):
                self._end(session)
                await self._on_authenticated(event)
            elif isinstance(event, Failed):
                share_id = self._end(session)
                if share_id is not None:
                    self.declined.add(share_id)
                logger.info("share auth failed: %s", event.error)

    def _end(self, session: bytes) -> bytes | None:
        self._sessions.pop(session, None)
        return self._asked.pop(session, None)
