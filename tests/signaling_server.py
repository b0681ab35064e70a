"""Run the real signaling relay as a subprocess on 127.0.0.1 for tests.

- fixture `signaling_server`: a relay with default limits, yields its ws:// URL;
- `signaling_relay(**limits)` (async) and `running_signaling_server(**limits)` (sync):
  a relay with custom limits (keyword names are the fields of signaling.Limits),
  yielding a SignalingServerProcess;
- `fetch_health(url)`: GET /healthz of a relay, parsed; `free_port()`: a free TCP port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 15.0
# What a test hides in topics, payloads and passwords, then looks for in the relay's logs:
# letters that no id, counter or timestamp holds (a digit marker, "4242", turned up by
# chance in a random relay id: CI run 4 of session 8).
SECRET = "zqxjvk"
SHUTDOWN_TIMEOUT = 15.0


@dataclass
class SignalingServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def log_records(self) -> list[dict[str, Any]]:
        """The relay's structured log so far, one dict per line."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum` and wait for the exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=SHUTDOWN_TIMEOUT)


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def limit_args(**limits: float) -> list[str]:
    """Command-line flags for the given Limits fields, e.g. max_topic_length=8."""
    args: list[str] = []
    for name, value in limits.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


def _read_url(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        process.kill()
        raise RuntimeError(f"signaling server did not start: {line!r}")
    return line.removeprefix("listening on ").strip()


def start_signaling_server(
    port: int = 0, extra_args: Sequence[str] = (), **limits: float
) -> SignalingServerProcess:
    """Start a relay on 127.0.0.1 (port 0: a free one); the caller must stop() it."""
    fd, log_name = tempfile.mkstemp(prefix="signaling-", suffix=".log")
    os.close(fd)
    with open(log_name, "wb") as log:
        command = [sys.executable, "-m", "signaling", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(
            [*command, *extra_args, *limit_args(**limits)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    return SignalingServerProcess(process, _read_url(process), Path(log_name))


def _finish(server: SignalingServerProcess, was_running: bool, code: int) -> None:
    if was_running and code != 0:
        raise AssertionError(f"signaling server exited {code}:\n{server.log_path.read_text()}")


def _clean_up(server: SignalingServerProcess) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()
    if server.process.stdout is not None:
        server.process.stdout.close()
    server.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def running_signaling_server(
    port: int = 0, extra_args: Sequence[str] = (), **limits: float
) -> Iterator[SignalingServerProcess]:
    """A relay for the duration of the block; it must still exit cleanly on SIGTERM.

    Stopping blocks: in async code use `signaling_relay`, so that clients of the same
    event loop can answer the relay's close frames while it shuts down.
    """
    server = start_signaling_server(port, extra_args, **limits)
    try:
        yield server
        was_running = server.process.poll() is None
        _finish(server, was_running, server.stop())
    finally:
        _clean_up(server)


@contextlib.asynccontextmanager
async def signaling_relay(
    port: int = 0, extra_args: Sequence[str] = (), **limits: float
) -> AsyncIterator[SignalingServerProcess]:
    """`running_signaling_server` for async tests: the event loop keeps running at stop."""
    server = start_signaling_server(port, extra_args, **limits)
    try:
        yield server
        was_running = server.process.poll() is None
        _finish(server, was_running, await asyncio.to_thread(server.stop))
    finally:
        _clean_up(server)


async def fetch_health(url: str) -> dict[str, Any]:
    """GET /healthz of the relay at ws(s)-URL `url` over plain HTTP/1.1 (no proxies)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(body)
    return result


async def wait_for_health(
    url: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll /healthz until `condition` holds (e.g. every connection is gone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition(health := await fetch_health(url)):
        if loop.time() > deadline:
            raise AssertionError(f"relay never reached the expected state: {health}")
        await asyncio.sleep(0.05)
    return health


@pytest.fixture
def signaling_server() -> Iterator[str]:
    """The ws:// URL of a fresh relay with default limits on 127.0.0.1."""
    with running_signaling_server() as server:
        yield server.url
