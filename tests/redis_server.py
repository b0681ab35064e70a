"""A real `redis-server` (Debian package redis-server) on 127.0.0.1 for tests, and relay clusters.

- `RedisServer.start(workdir)`: a private redis-server on a free loopback port, no
  persistence; `stop()` / `start_again()` restart it on the same port (relays must recover);
- fixture `redis_server`: one for the test, stopped after;
- `relay_cluster(redis_url, count)` (async) and `running_relay_cluster` (sync): `count`
  relay processes sharing that Redis.

Without redis-server the tests skip with a reason, except under CI=true where the CI
script installs it: there a missing server fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.environment import missing
from tests.signaling_server import (
    SignalingServerProcess,
    free_port,
    running_signaling_server,
    signaling_relay,
    wait_for_health,
)

STARTUP_TIMEOUT = 10.0


def require_redis_server() -> str:
    """The redis-server binary; skips the test without it (fails it under CI=true)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        missing(message)
    return binary


@dataclass
class RedisServer:
    binary: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, workdir: Path) -> RedisServer:
        server = cls(require_redis_server(), free_port(), workdir)
        server.start_again()
        return server

    def start_again(self) -> None:
        """(Re)start on the same port, with nothing kept from a previous run."""
        options = {"bind": "127.0.0.1", "port": str(self.port), "save": "", "appendonly": "no"}
        command = [self.binary, "--dir", str(self.workdir)]
        for name, value in options.items():
            command += [f"--{name}", value]
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen:\n{self.log()}")

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on 127.0.0.1 for this test."""
    server = RedisServer.start(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def _all_linked(relays: list[SignalingServerProcess]) -> None:
    for relay in relays:
        await wait_for_health(relay.url, lambda h: h["status"] == "ok")


@contextlib.asynccontextmanager
async def relay_cluster(
    redis_url: str, count: int = 3, **limits: float
) -> AsyncIterator[list[SignalingServerProcess]]:
    """`count` relays sharing `redis_url`, each linked to it before this yields."""
    async with contextlib.AsyncExitStack() as stack:
        relays = [
            await stack.enter_async_context(signaling_relay(0, ["--redis", redis_url], **limits))
            for _ in range(count)
        ]
        await _all_linked(relays)
        yield relays


@contextlib.contextmanager
def running_relay_cluster(
    redis_url: str, count: int = 3, **limits: float
) -> Iterator[list[SignalingServerProcess]]:
    """`relay_cluster` for tests without an event loop (daemon tests)."""
    with contextlib.ExitStack() as stack:
        relays = [
            stack.enter_context(running_signaling_server(0, ["--redis", redis_url], **limits))
            for _ in range(count)
        ]
        asyncio.run(_all_linked(relays))
        yield relays
