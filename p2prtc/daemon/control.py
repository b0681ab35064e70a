"""The daemon's control server: answers the CLI's requests on the home's unix socket.

The protocol (JSON lines; an error answer carries the error's message and exit code) and
the client are in p2prtc/control.py. The server answers the requests of one connection in
order and serves connections concurrently, so a long request (`join` waits until synced)
does not block `status`. A request that asks for progress (`"progress": true`) gets each
event its handler reports as an `{"event": ...}` line before the answer. A handler's
exception becomes an error answer; nothing a client sends can stop the server. If the
client goes away during a long request, the daemon still finishes the work.

A *stream* request (`{"cmd": "attach", ...}`, see `p2prtc/core/roomlink.py`) takes the
connection over: its handler answers and then both sides exchange lines until either closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from p2prtc.control import (
    MAX_LINE,
    DaemonShuttingDown,
    JsonObject,
    ProtocolError,
    decode_message,
    encode_message,
    error_answer,
)
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

# Reports one progress event of the request being answered (a no-op unless it asked).
Report = Callable[[JsonObject], None]
Handler = Callable[[JsonObject, Report], Awaitable[JsonObject]]
# Serves a stream request on its connection until either side closes it.
StreamHandler = Callable[[JsonObject, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# How long to wait when probing whether a daemon already answers on an existing socket.
_PROBE_TIMEOUT = 2.0


class DaemonAlreadyRunning(P2PError):
    """A p2prtc daemon is already running for this home."""


class ControlServer:
    """Serves control requests on a unix socket with an async handler."""

    def __init__(
        self, path: Path, handler: Handler, streams: Mapping[str, StreamHandler] | None = None
    ) -> None:
        self.path = path
        self._handler = handler
        self._streams = dict(streams or {})
        self._server: asyncio.AbstractServer | None = None
        self._socket_inode: int | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; remove a stale socket file, but refuse if a daemon answers on it."""
        if self.path.exists():
            if await _answers(self.path):
                raise DaemonAlreadyRunning(str(self.path))
            logger.info("removing stale control socket %s", self.path)
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve_connection, path=self.path, limit=MAX_LINE
        )
        self.path.chmod(0o600)
        self._socket_inode = self.path.stat().st_ino
        logger.info("control socket listening at %s", self.path)

    async def close(self) -> None:
        """Stop listening, end open connections (a pending request gets an error answer)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            # After the connections: from Python 3.12 on, wait_closed also waits for them.
            await server.wait_closed()
        self._remove_socket_file()

    def _remove_socket_file(self) -> None:
        # Only our own socket: another daemon may have taken the path since.
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._socket_inode:
                self.path.unlink()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # asyncio runs connection callbacks in their own task
        self._connections.add(task)
        try:
            await self._answer_requests(reader, writer)
        except ConnectionError as exc:
            logger.debug("control client went away: %s", exc)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE: the stream cannot be resynchronised
                writer.write(encode_message(error_answer(ProtocolError("request too long"))))
                await writer.drain()
                return
            if not line:
                return
            stream = self._stream_request(line)
            if stream is not None:
                handler, request = stream
                await handler(request, reader, writer)
                return
            try:
                answer = await self._answer(line, writer)
            except asyncio.CancelledError:
                writer.write(encode_message(error_answer(DaemonShuttingDown())))
                raise
            writer.write(answer)
            await writer.drain()

    def _stream_request(self, line: bytes) -> tuple[StreamHandler, JsonObject] | None:
        """The handler and request when ``line`` opens a stream, else None."""
        try:
            request = decode_message(line)
        except ProtocolError:
            return None  # answered as an error by _answer
        handler = self._streams.get(str(request.get("cmd")))
        return None if handler is None else (handler, request)

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> bytes:
        try:
            request = decode_message(line)
            if not isinstance(request.get("cmd"), str):
                raise ProtocolError('no "cmd" string')
            result = await self._handler(request, _reporter(request, writer))
            return encode_message({**result, "ok": True})
        except Exception as exc:
            if not isinstance(exc, P2PError):
                logger.exception("control request failed")  # its text may hold a join code
            return encode_message(error_answer(exc))


def _reporter(request: JsonObject, writer: asyncio.StreamWriter) -> Report:
    """Where the handler of ``request`` reports progress: the connection, if it asked."""
    if request.get("progress") is not True:
        return lambda event: None

    def report(event: JsonObject) -> None:
        if not writer.is_closing():  # a client gone mid-join: the daemon still finishes it
            writer.write(encode_message({"event": event}))

    return report


async def _answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at `path`."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), _PROBE_TIMEOUT)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        return True  # a full backlog means someone is listening
    writer.close()
    return True
