"""A hostile inviter: it knows the code, so the PAKE succeeds, but its sealed welcome is junk.

The welcome names the share's folder (its id) and the joined file (its name): an empty id
would make the folder the whole shares directory (a later ``leave`` would delete every
share's secret), ``..`` or a path would write outside the destination folder, a dotfile
would hide the notebook. The joining daemon, a real process, must refuse the welcome whole:
``join`` fails with one line, nothing is written, and the share it already holds keeps its
record and secret. A valid welcome from the same inviter gets past that point (control).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemons import LOOPBACK_ENV, SAMPLE, Node, copy_notebook

from p2prtc.adapters.rendezvous import RendezvousServer
from p2prtc.core.codes import generate_code, parse_code
from p2prtc.core.handshake import INVITE_VERSION, InviteHost
from p2prtc.core.messages import Opening, OpeningKind, Reply, Welcome
from p2prtc.daemon.pipes import HANDSHAKE_TIMEOUT_S, BytePipe, run_handshake

pytestmark = pytest.mark.timeout(120)

MALFORMED = "p2prtc: Another daemon sent a malformed message"
JOIN_TIMED_OUT = "p2prtc: No member of the share could be reached to sync the notebook"
VALID = json.loads(
    Welcome(bytes(range(16)), bytes(32), "welcome.ipynb", ("0123456789abcdef",), 1).encode()
)
HOSTILE_FIELDS = {
    "empty share id": {"share_id": ""},
    "short share id": {"share_id": "00"},
    "empty name": {"name": ""},
    "dot-dot name": {"name": ".."},
    "path name": {"name": "../escaped.ipynb"},
    "absolute name": {"name": "/tmp/escaped.ipynb"},
    "dotfile name": {"name": ".hidden.ipynb"},
    "empty secret": {"secret": ""},
    "path-like member": {"members": ["../../x"]},
    "negative generation": {"generation": -1},
}


@dataclass
class HostileInviter:
    """A rendezvous listener on its own thread: whoever redeems ``code`` gets ``welcome``."""

    code: str = ""
    welcome: dict[str, Any] = field(default_factory=dict)
    port: int = 0

    async def on_pipe(self, pipe: BytePipe) -> None:
        opening = Opening.decode(await pipe.recv(HANDSHAKE_TIMEOUT_S))
        if opening.kind is not OpeningKind.INVITE:
            return  # the joiner's daemon also dials static peers as a member: not here
        await pipe.send(Reply(invite_version=INVITE_VERSION).encode())
        payload = json.dumps(self.welcome).encode()
        await run_handshake(pipe, InviteHost(parse_code(self.code), payload))

    def offer(self, welcome: dict[str, Any]) -> str:
        """Host a fresh invitation sealing ``welcome``; its code."""
        self.code, self.welcome = str(generate_code(1)), welcome
        return self.code


@pytest.fixture(scope="module")
def inviter() -> Iterator[HostileInviter]:
    host = HostileInviter()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started: Future[RendezvousServer] = asyncio.run_coroutine_threadsafe(
        RendezvousServer.start("127.0.0.1", on_pipe=host.on_pipe), loop
    )
    server = started.result(timeout=10)
    host.port = server.port
    try:
        yield host
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@dataclass
class Joiner:
    node: Node
    own_record: Path  # share.json of the notebook it shares itself
    own_record_text: str

    def folders(self) -> list[Path]:
        return sorted((self.node.home / "shares").iterdir())


@pytest.fixture(scope="module")
def joiner(
    tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path, inviter: HostileInviter
) -> Iterator[Joiner]:
    root = tmp_path_factory.mktemp("joiner")
    (root / "work").mkdir()
    env = {**LOOPBACK_ENV, "P2PRTC_PEERS": f"127.0.0.1:{inviter.port}"}
    node = Node(root / "home", root / "work", env)
    own = copy_notebook(notebooks_dir / SAMPLE, node.workdir / "mine.ipynb")
    try:
        node.share(own)
        (record,) = (node.home / "shares").glob("*/share.json")
        yield Joiner(node, record, record.read_text())
    finally:
        node.shut_down()


@pytest.mark.parametrize("changes", HOSTILE_FIELDS.values(), ids=HOSTILE_FIELDS.keys())
def test_a_hostile_welcome_is_refused_and_changes_nothing(
    joiner: Joiner, inviter: HostileInviter, changes: dict[str, Any]
) -> None:
    folders_before = joiner.folders()
    files_before = sorted(joiner.node.workdir.parent.rglob("*"))
    code = inviter.offer({**VALID, **changes})

    result = joiner.node.run("join", code, "--timeout", "20", check=False)

    assert result.returncode == 1
    assert result.stderr.strip().startswith(MALFORMED), result.stderr
    assert joiner.folders() == folders_before
    assert not (joiner.node.home / "shares" / "share.json").exists()
    assert joiner.own_record.read_text() == joiner.own_record_text
    assert sorted(joiner.node.workdir.parent.rglob("*")) == files_before
    (share,) = joiner.node.status()["shares"]
    assert Path(share["path"]).name == "mine.ipynb"


def test_the_same_inviter_with_a_valid_welcome_gets_a_joining_share(
    joiner: Joiner, inviter: HostileInviter
) -> None:
    code = inviter.offer(dict(VALID))

    result = joiner.node.run("join", code, "--timeout", "1", check=False)

    # Accepted: the share exists and waits for a member to sync it (none will come here).
    (line,) = result.stderr.splitlines()
    assert line.startswith(JOIN_TIMED_OUT), line
    # What was tried, and the one setting that would help (issue 13); before it, once the
    # daemon has dialled it, why the only member known (this inviter) was not reached.
    assert "still trying in the background; tried for 1 s: mDNS off; relays: none;" in line
    assert "; members not reached: " in line
    assert "; hint: from another network, both daemons need the same relay" in line
    names = [Path(s["path"]).name for s in joiner.node.status()["shares"]]
    assert sorted(names) == ["mine.ipynb", "welcome.ipynb"]
    record = json.loads(
        (joiner.node.home / "shares" / VALID["share_id"] / "share.json").read_text()
    )
    assert record["generation"] == VALID["generation"] == 1  # the membership generation
    assert record["members"] == [*VALID["members"], joiner.node.status()["daemon"]["id"]]
    joiner.node.run("leave", str(joiner.node.workdir / "welcome.ipynb"))
    assert joiner.own_record.read_text() == joiner.own_record_text
