"""Real Jupyter servers (jupyter_server + jupyter-collaboration) beside real daemons, and tabs.

``JupyterServer`` runs ``python -m jupyter_server`` on 127.0.0.1 with its own Jupyter dirs and
the ``P2PRTC_HOME`` of a test daemon, so the p2prtc extension (enabled by the config this
package installs, as a user's would be) finds that daemon. ``Tab`` plays a JupyterLab tab the
way the frontend does: the collaboration session API, then the room's websocket, synced by a
pycrdt provider (pycrdt-websocket's client protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import (
    Awareness,
    Provider,
    Text,
    YMessageType,
    create_awareness_message,
    read_message,
)
from websockets.asyncio.client import ClientConnection, connect

from tests.daemons import Node, Pair, synced_pair
from tests.signaling_server import free_port

SERVER_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerAddress:
    """Where a Jupyter server answers (127.0.0.1 of its machine) and its token."""

    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def wait_until_serving(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(headers=self.headers()) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/api/status")).is_success:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"no Jupyter server at {self.url}")

    async def room_url(self, path: str) -> str:
        """The websocket URL of ``path``'s room, through the collaboration session API."""
        async with httpx.AsyncClient(headers=self.headers()) as client:
            answer = await client.put(
                f"{self.url}/api/collaboration/session/{path}",
                json={"format": "json", "type": "notebook"},
            )
            answer.raise_for_status()
            session = answer.json()
        room = f"json:notebook:{session['fileId']}"
        return (
            f"ws://127.0.0.1:{self.port}/api/collaboration/room/{room}"
            f"?sessionId={session['sessionId']}&token={self.token}"
        )


@dataclass
class JupyterServer:
    """One Jupyter server process serving ``root`` for the daemon of ``node`` (inside the
    node's network namespace when it has one)."""

    root: Path
    node: Node
    state: Path
    extra_args: list[str] = field(default_factory=list)
    # Without the p2prtc extension: stock jupyter-collaboration (its rooms load and save the
    # file, which the daemon syncs like any editor's).
    stock: bool = False
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> ServerAddress:
        return ServerAddress(self.port, self.token)

    @property
    def log(self) -> Path:
        return self.state / "server.log"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "P2PRTC_HOME": str(self.node.home),
            "JUPYTER_CONFIG_DIR": str(self.state / "config"),
            "JUPYTER_DATA_DIR": str(self.state / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.state / "runtime"),
        }

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        if self.stock:
            # The user config folder outranks the one the package installs its config into.
            config = self.state / "config" / "jupyter_server_config.json"
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text('{"ServerApp": {"jpserver_extensions": {"p2prtc.jupyter": false}}}')
        self.port = self.port or free_port()
        argv = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            # Nothing beyond loopback: no extension manager asking PyPI.
            "--LabApp.extension_manager=readonly",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            *self.extra_args,
        ]
        if self.node.namespace:
            argv = ["ip", "netns", "exec", self.node.namespace, *argv]
        with self.log.open("ab") as log:
            # The server's own state (SQLite ystore, file ids) stays in the test's folder.
            self.process = subprocess.Popen(
                argv, cwd=self.state, env=self.env(), stdout=log, stderr=log
            )
        # Its "running at" line: also readable from outside its network namespace.
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter server exited:\n{self.log_tail()}")
            if "is running at" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"jupyter server did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def jupyter_server(
    root: Path, node: Node, state: Path, *args: str, stock: bool = False
) -> Iterator[JupyterServer]:
    server = JupyterServer(root, node, state, list(args), stock=stock)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Machines:
    """Two loopback daemons synced over a notebook (A shared, B joined), a Jupyter server
    beside each."""

    pair: Pair
    a: JupyterServer
    b: JupyterServer


# A room is dropped this long after its last tab closed (stock: 60 s).
CLEANUP = "--YDocExtension.document_cleanup_delay=0.5"
# What the daemons of two_machines are called: peers mark their users with it.
MACHINE_NAMES = ("machine-a", "machine-b")


@contextlib.contextmanager
def two_machines(root: Path, notebook: Path) -> Iterator[Machines]:
    """Daemons called ``machine-a`` and ``machine-b``, each with its Jupyter server."""
    with (
        synced_pair(root / "daemons", notebook, MACHINE_NAMES) as pair,
        jupyter_server(pair.a.workdir, pair.a, root / "jupyter-a", CLEANUP) as a,
        jupyter_server(pair.b.workdir, pair.b, root / "jupyter-b", CLEANUP) as b,
    ):
        yield Machines(pair, a, b)


class _WebsocketChannel:
    """pycrdt's Channel over a websockets client connection; awareness messages also go to
    ``awareness`` (the provider only syncs the doc)."""

    def __init__(self, websocket: ClientConnection, path: str, awareness: Awareness) -> None:
        self._websocket = websocket
        self._path = path
        self._awareness = awareness

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _WebsocketChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except Exception:
            raise StopAsyncIteration() from None

    async def send(self, message: bytes) -> None:
        await self._websocket.send(message)

    async def recv(self) -> bytes:
        message = await self._websocket.recv()
        data = message if isinstance(message, bytes) else message.encode()
        if data[0] == YMessageType.AWARENESS:
            self._awareness.apply_awareness_update(read_message(data[1:]), "remote")
        return data


@dataclass
class Tab:
    """A JupyterLab tab on one notebook: a YNotebook synced with the server's room, and the
    room's awareness (who is there)."""

    notebook: YNotebook
    awareness: Awareness
    channel: _WebsocketChannel

    async def announce(self, name: str) -> None:
        """Say who we are, as JupyterLab does (awareness ``user``: the server's identity)."""
        user = {"username": name, "name": name, "display_name": name, "initials": name[:1]}
        self.awareness.set_local_state({"user": user})
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        await self.channel.send(create_awareness_message(update))

    def collaborators(self) -> set[str]:
        """Names of the other users the room says are here, as JupyterLab shows them."""
        return {
            state["user"]["display_name"]
            for client, state in self.awareness.states.items()
            if client != self.awareness.client_id and state and "user" in state
        }

    def source(self, index: int) -> str:
        return str(self.notebook.ycells[index]["source"])

    def text(self, index: int) -> Text:
        text: Text = self.notebook.ycells[index]["source"]
        return text

    def type(self, index: int, characters: str, at: int | None = None) -> None:
        """Insert ``characters`` into cell ``index`` (at the end by default), like typing."""
        text = self.text(index)
        text.insert(len(text) if at is None else at, characters)

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = self.notebook.get()
        return content

    async def wait_for(
        self, predicate: Callable[[Tab], bool], timeout: float = 20.0, what: str = ""
    ) -> None:
        await until(lambda: predicate(self), timeout, what)


async def until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """``daemons.wait_until`` for tests with open tabs: the tabs' websockets keep running.

    The predicate runs on the loop's thread (pycrdt objects must not change thread): it must
    be quick (reading a file is).
    """
    deadline = time.monotonic() + timeout
    while not _holds(predicate):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


def _holds(predicate: Callable[[], bool]) -> bool:
    try:
        return predicate()
    except (OSError, ValueError, KeyError, IndexError):
        return False  # a file mid-replace or not there yet


@contextlib.asynccontextmanager
async def open_tab(server: ServerAddress, path: str) -> AsyncIterator[Tab]:
    """A tab on ``path``, synced with its room (the room's content is there on entry)."""
    await server.wait_until_serving()
    url = await server.room_url(path)
    notebook = YNotebook()
    awareness = Awareness(notebook.ydoc)
    async with connect(url, max_size=None) as websocket:
        channel = _WebsocketChannel(websocket, url, awareness)
        async with Provider(notebook.ydoc, channel) as provider:
            await asyncio.wait_for(provider.synced.wait(), 30)
            yield Tab(notebook, awareness, channel)
