"""Local control protocol between the CLI and the daemon: JSON lines over a unix socket.

A request is one JSON object on one line, `{"cmd": "<name>", ...}`; the answer is one JSON
object on one line: `{"ok": true, ...}` or `{"ok": false, "error": "<one line for the user>",
"kind": "<error class name>", "exit_code": <the exit status that error carries>}`. A request
that carries `"progress": true` may first get `{"event": {...}}` lines, one per step of a long
request (a join reports its phases); a request without it never does. The
socket lives at `paths.control_socket(home)` with mode 0600 in a 0700 folder, so only the
owner can talk to the daemon. The server is p2prtc/daemon/control.py.

The client here is synchronous (it runs inside click commands) and opens one connection per
call. Clients (the CLI, the Jupyter extension) import this module, never the daemon package.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from p2prtc import paths
from p2prtc.errors import ExitCode, P2PError

JsonObject = dict[str, Any]
# Called with each progress event of a request that asked for them.
OnEvent = Callable[[JsonObject], None]

# Generous: `join` waits for the first sync, which can take a while on a slow network.
DEFAULT_TIMEOUT = 300.0
# Largest line either side accepts; `status` of many shares stays far below.
MAX_LINE = 16 * 1024 * 1024
# How long connecting may take (a unix socket does not wait on the network).
CONNECT_TIMEOUT = 2.0
# A daemon asked to stop exits within this, whatever hangs in its shutdown.
SHUTDOWN_BOUND_S = 10.0
# How long the CLI waits for a stopping daemon to exit: the bound, and the exit itself.
EXIT_WAIT_S = SHUTDOWN_BOUND_S + 5.0


class DaemonNotRunning(P2PError):
    """The p2prtc daemon is not running."""

    exit_code = ExitCode.DAEMON_UNREACHABLE


class DaemonTimeout(P2PError):
    """The p2prtc daemon did not answer in time."""

    exit_code = ExitCode.DAEMON_UNREACHABLE


class DaemonGone(P2PError):
    """The p2prtc daemon stopped before answering."""

    exit_code = ExitCode.DAEMON_UNREACHABLE


class DaemonShuttingDown(P2PError):
    """The p2prtc daemon is shutting down."""


class DaemonStillStopping(P2PError):
    """The p2prtc daemon did not finish stopping in time (see `p2prtc logs`)."""

    exit_code = ExitCode.DAEMON_UNREACHABLE


class ProtocolError(P2PError):
    """A control message between p2prtc and its daemon was malformed."""


class DaemonError(P2PError):
    """The p2prtc daemon reported an error."""

    def __init__(self, message: str, kind: str, exit_code: int = ExitCode.ERROR) -> None:
        self.kind = kind  # the daemon-side error class name
        self.exit_code = exit_code  # the one that error carries
        super().__init__(message)

    @property
    def message(self) -> str:
        """The daemon's own one-line message, shown as is."""
        return self.detail or super().message


def daemon_process_holds(home: Path) -> bool:
    """Is a daemon process alive for ``home`` (running, starting or still stopping)? Its
    control socket closes first when it stops: only its lock says when it has exited."""
    try:
        fd = os.open(paths.lock_file(home), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the probe's own lock
    return False


def wait_until_exited(home: Path, timeout: float) -> None:
    """Return once no daemon process holds ``home``; DaemonStillStopping after ``timeout``."""
    deadline = time.monotonic() + timeout
    while daemon_process_holds(home):
        if time.monotonic() > deadline:
            raise DaemonStillStopping()
        time.sleep(0.05)


# --- wire format ------------------------------------------------------------------------


def encode_message(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_message(line: bytes) -> JsonObject:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def _one_line(text: str) -> str:
    return " ".join(text.split())


def error_answer(exc: BaseException) -> JsonObject:
    """The answer that reports `exc` to the client."""
    if isinstance(exc, P2PError):
        message = exc.message
    else:
        message = f"The p2prtc daemon hit an internal error ({type(exc).__name__}: {exc})."
    exit_code = exc.exit_code if isinstance(exc, P2PError) else ExitCode.ERROR
    answer = {"ok": False, "error": _one_line(message), "kind": type(exc).__name__}
    return {**answer, "exit_code": int(exit_code)}


# --- client -----------------------------------------------------------------------------


def call(
    home: Path,
    request: Mapping[str, Any],
    timeout: float | None = DEFAULT_TIMEOUT,
    on_event: OnEvent | None = None,
) -> JsonObject:
    """Send one request to the daemon of `home` and return its successful answer.

    `timeout` bounds the whole exchange in seconds (None waits forever). With `on_event`,
    the request asks for progress and each event is handed to it as it arrives. Raises
    DaemonNotRunning, DaemonTimeout, DaemonGone, ProtocolError, or DaemonError carrying the
    daemon's message and error `kind`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if on_event is not None:
        request = {**request, "progress": True}
    with _connect(paths.control_socket(home)) as sock:
        _set_remaining(sock, deadline)
        try:
            sock.sendall(encode_message(request))
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise DaemonGone() from exc
        lines = _Lines(sock, deadline)
        answer = decode_message(lines.next())
        while on_event is not None and "ok" not in answer and isinstance(answer.get("event"), dict):
            on_event(answer["event"])
            answer = decode_message(lines.next())
    if answer.get("ok") is True:
        return answer
    error, kind = answer.get("error"), answer.get("kind")
    if answer.get("ok") is not False or not isinstance(error, str) or not isinstance(kind, str):
        raise ProtocolError(f"unexpected answer {answer!r:.200}")
    exit_code = answer.get("exit_code", ExitCode.ERROR)  # absent from older daemons' answers
    raise DaemonError(error, kind, exit_code if isinstance(exit_code, int) else ExitCode.ERROR)


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Connecting to a unix socket does not wait on the network; bound it anyway.
    sock.settimeout(CONNECT_TIMEOUT)
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


class _Lines:
    """The lines the daemon sends on one connection, read within the call's deadline."""

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = bytearray()

    def next(self) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError("answer too long")
            _set_remaining(self._sock, self._deadline)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise DaemonTimeout() from exc
            except ConnectionResetError as exc:
                raise DaemonGone() from exc
            if not chunk:
                raise DaemonGone()
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line
