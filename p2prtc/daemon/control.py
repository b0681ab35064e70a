"""Local control protocol between the CLI and the daemon: JSON lines over a unix socket.

A request is one JSON object on one line, `{"cmd": "<name>", ...}`; the answer is one JSON
object on one line: `{"ok": true, ...}` or `{"ok": false, "error": "<one line for the user>",
"kind": "<error class name>"}`. The socket lives at `paths.control_socket(home)` with mode
0600 in a 0700 folder, so only the owner can talk to the daemon.

The server answers the requests of one connection in order and serves connections
concurrently, so a long request (`join` waits until synced) does not block `status`. A
handler's exception becomes an error answer; nothing a client sends can stop the server.
If the client goes away during a long request, the daemon still finishes the work.

A *stream* request (`{"cmd": "attach", ...}`, see `p2prtc/core/roomlink.py`) takes the
connection over: its handler answers and then both sides exchange lines until either closes.

The client is synchronous (it runs inside click commands) and opens one connection per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from p2prtc import paths
from p2prtc.errors import P2PError

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
Handler = Callable[[JsonObject], Awaitable[JsonObject]]
# Serves a stream request on its connection until either side closes it.
StreamHandler = Callable[[JsonObject, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Generous: `join` waits for the first sync, which can take a while on a slow network.
DEFAULT_TIMEOUT = 300.0
# Largest line either side accepts; `status` of many shares stays far below.
MAX_LINE = 16 * 1024 * 1024
# How long to wait when probing whether a daemon already answers on an existing socket.
_PROBE_TIMEOUT = 2.0


class DaemonNotRunning(P2PError):
    """The p2prtc daemon is not running."""


class DaemonAlreadyRunning(P2PError):
    """A p2prtc daemon is already running for this home."""


class DaemonTimeout(P2PError):
    """The p2prtc daemon did not answer in time."""


class DaemonGone(P2PError):
    """The p2prtc daemon stopped before answering."""


class DaemonShuttingDown(P2PError):
    """The p2prtc daemon is shutting down."""


class ProtocolError(P2PError):
    """A control message between p2prtc and its daemon was malformed."""


class DaemonError(P2PError):
    """The p2prtc daemon reported an error."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind  # the daemon-side error class name, for the CLI's exit codes
        super().__init__(message)

    @property
    def message(self) -> str:
        """The daemon's own one-line message, shown as is."""
        return self.detail or super().message


# --- wire format ------------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_object(line: bytes) -> JsonObject:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_response(exc: BaseException) -> JsonObject:
    """The answer that reports `exc` to the client."""
    if isinstance(exc, P2PError):
        message = exc.message
    else:
        message = f"The p2prtc daemon hit an internal error ({type(exc).__name__}: {exc})."
    return {"ok": False, "error": _one_line(message), "kind": type(exc).__name__}


# --- server -----------------------------------------------------------------------------


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
                writer.write(encode(error_response(ProtocolError("request too long"))))
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
                answer = await self._answer(line)
            except asyncio.CancelledError:
                writer.write(encode(error_response(DaemonShuttingDown())))
                raise
            writer.write(answer)
            await writer.drain()

    def _stream_request(self, line: bytes) -> tuple[StreamHandler, JsonObject] | None:
        """The handler and request when ``line`` opens a stream, else None."""
        try:
            request = decode_object(line)
        except ProtocolError:
            return None  # answered as an error by _answer
        handler = self._streams.get(str(request.get("cmd")))
        return None if handler is None else (handler, request)

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = decode_object(line)
            if not isinstance(request.get("cmd"), str):
                raise ProtocolError('no "cmd" string')
            result = await self._handler(request)
            return encode({**result, "ok": True})
        except Exception as exc:
            if not isinstance(exc, P2PError):
                logger.exception("control request failed")  # its text may hold a join code
            return encode(error_response(exc))


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


# --- client -----------------------------------------------------------------------------


def call(
    home: Path, request: Mapping[str, Any], timeout: float | None = DEFAULT_TIMEOUT
) -> JsonObject:
    """Send one request to the daemon of `home` and return its successful answer.

    `timeout` bounds the whole exchange in seconds (None waits forever). Raises
    DaemonNotRunning, DaemonTimeout, DaemonGone, ProtocolError, or DaemonError carrying the
    daemon's message and error `kind`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _connect(paths.control_socket(home)) as sock:
        _set_remaining(sock, deadline)
        try:
            sock.sendall(encode(request))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DaemonGone() from exc
        answer = decode_object(_read_line(sock, deadline))
    if answer.get("ok") is True:
        return answer
    error, kind = answer.get("error"), answer.get("kind")
    if answer.get("ok") is not False or not isinstance(error, str) or not isinstance(kind, str):
        raise ProtocolError(f"unexpected answer {answer!r:.200}")
    raise DaemonError(error, kind)


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Connecting to a unix socket does not wait on the network; bound it anyway.
    sock.settimeout(_PROBE_TIMEOUT)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning() from exc
    except TimeoutError as exc:
        sock.close()
        raise DaemonTimeout() from exc
    except OSError as exc:
        sock.close()
        raise DaemonNotRunning(f"{path}: {exc.strerror or exc}") from exc
    return sock


def _set_remaining(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DaemonTimeout()
    sock.settimeout(remaining)


def _read_line(sock: socket.socket, deadline: float | None) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        if len(buffer) > MAX_LINE:
            raise ProtocolError("answer too long")
        _set_remaining(sock, deadline)
        try:
            chunk = sock.recv(65536)
        except TimeoutError as exc:
            raise DaemonTimeout() from exc
        except ConnectionResetError as exc:
            raise DaemonGone() from exc
        if not chunk:
            raise DaemonGone()
        buffer += chunk
    return bytes(buffer[: buffer.index(b"\n")])
