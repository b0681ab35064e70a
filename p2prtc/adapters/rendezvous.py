"""The LAN rendezvous pipe: a WebSocket between two daemons carrying handshake messages.

Every daemon runs a `RendezvousServer` (its port is what mDNS announces); another daemon
opens a `Pipe` to it with `connect_pipe()`. A pipe carries binary messages only, each at
most MAX_MESSAGE_SIZE bytes: PAKE/handshake messages and sealed SDP, all small, then (between
daemons that both can) a notebook's first state in many sealed messages. What the messages
mean is the daemon's business; this module only moves them.

websockets options chosen on purpose: compression off (payloads are sealed, hence
incompressible, and compressing secrets next to attacker-chosen data leaks them), no
proxy (websockets would otherwise honour HTTP(S)_PROXY, but a LAN peer is reached
directly), no Server header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import CloseCode

from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 64 * 1024
CLOSE_TIMEOUT = 2.0

OnPipe = Callable[["Pipe"], Awaitable[None]]


class RendezvousError(P2PError):
    """The rendezvous connection to the other daemon failed."""


class CannotListen(P2PError):
    """Could not listen for other daemons (are P2PRTC_INTERFACES and P2PRTC_PORT right?)"""


class ConnectFailed(RendezvousError):
    """Could not reach the other daemon."""


class PipeClosed(RendezvousError):
    """The rendezvous connection is closed."""


class PipeTimeout(RendezvousError):
    """The other daemon did not answer in time."""


class Pipe:
    """One rendezvous connection: binary messages both ways, in order."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        # Read now: the socket's peer name is gone once the connection is closed.
        address: Any = connection.remote_address
        self.remote_address: tuple[str, int] = (str(address[0]), int(address[1]))
        """The other end's (host, port)."""

    @property
    def direct(self) -> bool:
        """A TCP connection straight to the other daemon (never through a relay)."""
        return True

    async def send(self, data: bytes) -> None:
        """Send one message; ValueError if it exceeds MAX_MESSAGE_SIZE."""
        if len(data) > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
        try:
            await self._connection.send(data)
        except ConnectionClosed as exc:
            raise PipeClosed(_closed_detail(exc)) from exc

    async def recv(self, timeout: float | None = None) -> bytes:
        """The next message; PipeTimeout after `timeout` seconds (the pipe stays usable),
        PipeClosed once the connection is closed (or the peer broke the protocol)."""
        try:
            # websockets guarantees that cancelling recv() loses no message.
            message = await asyncio.wait_for(self._connection.recv(), timeout)
        except TimeoutError:
            raise PipeTimeout(f"no message within {timeout:g} s") from None
        except ConnectionClosed as exc:
            raise PipeClosed(_closed_detail(exc)) from exc
        if isinstance(message, str):
            await self._connection.close(CloseCode.UNSUPPORTED_DATA, "binary messages only")
            raise PipeClosed("the other daemon sent text")
        return message

    async def close(self) -> None:
        """Close the connection (the other end's recv() raises PipeClosed)."""
        await self._connection.close()


def _closed_detail(exc: ConnectionClosed) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "connection lost"
    return f"code {int(close.code)}" + (f": {close.reason}" if close.reason else "")


HANDLER_GRACE_S = 1.0


class RendezvousServer:
    """Accepts pipes and hands each to `on_pipe`; the pipe closes when `on_pipe` returns."""

    def __init__(self) -> None:
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, host: str, port: int = 0, *, on_pipe: OnPipe) -> RendezvousServer:
        """Listen on host:port (port 0: any free port, see `.port`)."""
        self = cls()

        async def handle(connection: ServerConnection) -> None:
            pipe = Pipe(connection)
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await on_pipe(pipe)
            except RendezvousError as exc:  # a peer leaving mid-exchange is routine
                logger.info("rendezvous with %s ended: %s", pipe.remote_address, exc)
            finally:
                self._handlers.discard(task)

        try:
            server = await serve(
                handle,
                host,
                port,
                compression=None,
                server_header=None,
                max_size=MAX_MESSAGE_SIZE,
                close_timeout=CLOSE_TIMEOUT,
            )
        except OSError as exc:
            raise CannotListen(f"{host}:{port}: {exc.strerror or exc}") from exc
        self._server = server
        return self

    @property
    def port(self) -> int:
        """The TCP port actually listened on."""
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close open pipes (code 1001); handlers busy elsewhere (e.g.
        waiting for a WebRTC link) get a short grace, then are cancelled."""
        assert self._server is not None
        self._server.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=HANDLER_GRACE_S)
        for task in list(self._handlers):
            task.cancel()
        await self._server.wait_closed()


async def connect_pipe(host: str, port: int, timeout: float) -> Pipe:
    """Open a pipe to the rendezvous server at host:port, within `timeout` seconds."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        connection = await connect(
            f"ws://{authority}/",
            open_timeout=timeout,
            proxy=None,
            compression=None,
            max_size=MAX_MESSAGE_SIZE,
            close_timeout=CLOSE_TIMEOUT,
        )
    except (OSError, WebSocketException) as exc:
        raise ConnectFailed(f"{authority}: {exc or type(exc).__name__}") from exc
    return Pipe(connection)
