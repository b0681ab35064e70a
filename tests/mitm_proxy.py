"""A man in the middle for tests: a WebSocket relay between a daemon and what it dials.

The joiner's daemon dials the proxy (``P2PRTC_PEERS=127.0.0.1:<proxy port>``) instead of the
sharer's rendezvous listener, or daemons use it as their signaling relay
(``P2PRTC_SIGNAL=ws://127.0.0.1:<proxy port>``). For every connection the proxy opens its own
connection upstream and relays messages both ways, recording every byte it sees; a ``tamper``
coroutine may replace any message on its way (the attacker's move). The proxy runs its own
event loop in a thread, so synchronous tests can drive the daemons through the CLI meanwhile.

What travels on a rendezvous pipe (p2prtc/daemon/pipes.py, core/messages.py): the dialler's
JSON envelope and the listener's ``ok``, then raw handshake messages, and after a member
handshake the SDP offer (dialler) and answer (listener), sealed under the handshake's
channel. Hence the message positions below.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from p2prtc.adapters.rendezvous import PipeClosed, connect_pipe

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 10.0
CALL_TIMEOUT_S = 30.0
_T = TypeVar("_T")


class Direction(enum.Enum):
    TO_LISTENER = "dialler -> listener"
    TO_DIALLER = "listener -> dialler"


# Position of each message on a member pipe, per direction.
MEMBER_SEALED_OFFER = (Direction.TO_LISTENER, 3)  # after envelope, HELLO, FINISH
MEMBER_SEALED_ANSWER = (Direction.TO_DIALLER, 2)  # after ok, PROOF


@dataclass(frozen=True)
class Relayed:
    """One message as the proxy saw it (before any tampering)."""

    pipe: int  # pipes are numbered in the order diallers connected, from 0
    kind: str  # the dialler's envelope kind: "invite", "member" ("?": not a rendezvous)
    direction: Direction
    index: int  # position among this pipe's messages in this direction, from 0
    data: bytes

    @property
    def position(self) -> tuple[Direction, int]:
        return self.direction, self.index

    def is_member(self, position: tuple[Direction, int]) -> bool:
        return self.kind == "member" and self.position == position


# The attacker: given a message on its way, the bytes to forward instead.
Tamper = Callable[[Relayed], Awaitable[bytes]]


async def forward_unchanged(message: Relayed) -> bytes:
    return message.data


def rendezvous_url(port: int) -> str:
    return f"ws://{LOOPBACK}:{port}/"


def flip_last_bit(data: bytes) -> bytes:
    """``data`` with one bit of its last byte flipped (inside an AEAD tag, when sealed)."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


class MitmProxy:
    """The relay (see module docstring). Use as a context manager; ``port`` is where it listens
    (any free port unless given)."""

    def __init__(self, upstream: str, tamper: Tamper = forward_unchanged, port: int = 0) -> None:
        self.upstream = upstream  # a ws:// URL
        self.tamper = tamper
        self.port = port
        self._records: list[Relayed] = []
        self._lock = threading.Lock()
        self._pipes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Server | None = None

    def __enter__(self) -> MitmProxy:
        self._thread.start()
        self._server = self.call(self._listen())
        self.port = int(next(iter(self._server.sockets)).getsockname()[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` in the proxy's event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CALL_TIMEOUT_S)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                self.call(asyncio.wait_for(self._server.wait_closed(), START_TIMEOUT_S))
            self._server = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)

    @property
    def records(self) -> list[Relayed]:
        """Everything relayed so far, in the order the proxy saw it."""
        with self._lock:
            return list(self._records)

    def seen_bytes(self) -> bytes:
        """All bytes the proxy saw, concatenated (to search for what must not leak)."""
        return b"".join(record.data for record in self.records)

    def pipes_of_kind(self, kind: str) -> list[int]:
        return sorted({r.pipe for r in self.records if r.kind == kind})

    def conversation(self, pipe: int) -> list[Relayed]:
        """One pipe's messages both ways, in the order the proxy relayed them."""
        return [record for record in self.records if record.pipe == pipe]

    # --- relaying (in the proxy's loop) --------------------------------------------------

    async def _listen(self) -> Server:
        # Same options as p2prtc's rendezvous: no compression, no proxy.
        return await serve(self._relay, LOOPBACK, self.port, compression=None, max_size=None)

    async def _relay(self, dialler: ServerConnection) -> None:
        pipe = self._pipes
        self._pipes += 1
        session = _Session(pipe)
        try:
            upstream = await connect(
                self.upstream,
                compression=None,
                proxy=None,
                max_size=None,
                open_timeout=START_TIMEOUT_S,
            )
        except OSError:
            return
        async with upstream:
            await _first_done(
                self._pump(session, dialler, upstream, Direction.TO_LISTENER),
                self._pump(session, upstream, dialler, Direction.TO_DIALLER),
            )

    async def _pump(
        self,
        session: _Session,
        source: Connection,
        target: Connection,
        direction: Direction,
    ) -> None:
        index = 0
        with contextlib.suppress(ConnectionClosed):
            async for data in source:
                text = isinstance(data, str)
                raw = data.encode() if isinstance(data, str) else data
                if direction is Direction.TO_LISTENER and index == 0:
                    session.kind = _envelope_kind(raw)
                message = Relayed(session.pipe, session.kind, direction, index, raw)
                with self._lock:
                    self._records.append(message)
                index += 1
                forwarded = await self.tamper(message)
                await target.send(forwarded.decode() if text else forwarded)
        await target.close()


@dataclass
class _Session:
    pipe: int
    kind: str = "?"


def _envelope_kind(data: bytes) -> str:
    try:
        return str(json.loads(data)["kind"])
    except (ValueError, KeyError, TypeError):
        return "?"


async def _first_done(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run the two pumps until either side closes, then stop the other."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def replay_dialler(port: int, conversation: list[Relayed], timeout: float) -> list[bytes]:
    """Play a recorded pipe's dialler messages to the listener at ``port`` on a fresh pipe.

    Messages go in the recorded order, each recorded reply being waited for in its place;
    returns the replies the listener actually sent before it closed the pipe.
    """
    pipe = await connect_pipe(LOOPBACK, port, timeout)
    replies: list[bytes] = []
    try:
        for message in conversation:
            if message.direction is Direction.TO_LISTENER:
                await pipe.send(message.data)
            else:
                replies.append(await pipe.recv(timeout))
    except PipeClosed:
        pass  # the listener gave up on us: what we got so far is the answer
    finally:
        await pipe.close()
    return replies
