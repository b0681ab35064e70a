"""Daemons that cannot find each other on the LAN meet through real signaling relays.

mDNS is off and no peer address is given: the only way to meet is a relay process on
127.0.0.1 (or a cluster of them on a real redis-server); WebRTC then connects directly
(host candidates on loopback).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import secrets
import time
from pathlib import Path

import pytest
from daemons import (
    LOOPBACK_ENV,
    SAMPLE,
    Node,
    cell_source,
    copy_notebook,
    edit_cell,
    read_notebook,
    states_over_pipe,
    wait_until,
    write_like_jupyter,
)
from redis_server import RedisServer, running_relay_cluster
from signaling_server import fetch_health, running_signaling_server
from websockets.asyncio.client import ClientConnection, connect

from p2prtc.core.keys import invite_topic

pytestmark = pytest.mark.timeout(180)


def relay_nodes(root: Path, **signals: list[str]) -> list[Node]:
    """One daemon home per keyword, meeting others only through the given relay URLs."""
    nodes = []
    for name, urls in signals.items():
        (root / name).mkdir()
        env = {**LOOPBACK_ENV, "P2PRTC_SIGNAL": ",".join(urls)}
        nodes.append(Node(root / name / "home", root / name, env))
    return nodes


def relays_connected(node: Node) -> dict[str, bool]:
    return {relay["url"]: relay["connected"] for relay in node.status()["daemon"]["signaling"]}


def test_share_and_join_through_signaling_only(
    tmp_path: Path, notebooks_dir: Path, signaling_server: str
) -> None:
    nodes = relay_nodes(tmp_path, a=[signaling_server], b=[signaling_server])
    a, b = nodes
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "remote.ipynb")
    try:
        code = a.share(notebook)
        joined = Path(b.join(code)["path"])
        assert joined.read_bytes() == notebook.read_bytes()
        assert states_over_pipe(b) == []  # a relay carries no notebook: WebRTC did

        nb = read_notebook(joined)
        nb["cells"][3]["source"].insert(0, "through the relay\n")
        write_like_jupyter(joined, nb)
        wait_until(lambda: "through the relay" in cell_source(notebook, 3), what="B's edit on A")

        status = b.status()
        assert status["daemon"]["signaling"] == [{"url": signaling_server, "connected": True}]
        (share,) = status["shares"]
        assert [peer["path_type"] for peer in share["peers"]] == ["host"]
    finally:
        for node in nodes:
            node.shut_down()


def test_daemons_fail_over_to_another_relay_and_keep_syncing(
    tmp_path: Path, notebooks_dir: Path, redis_server: RedisServer
) -> None:
    with running_relay_cluster(redis_server.url, 3) as (r0, r1, r2):
        # Each hears the other through two relays (r1 directly, and Redis).
        a, b = relay_nodes(tmp_path, a=[r0.url, r1.url], b=[r1.url, r2.url])
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "remote.ipynb")
        try:
            joined = Path(b.join(a.share(notebook))["path"])
            wait_until(lambda: a.peers_synced(notebook, 1) and b.peers_synced(joined, 1))
            # One connection, not one per relay.
            assert [len(node.status()["shares"][0]["peers"]) for node in (a, b)] == [1, 1]

            r1.process.kill()
            r1.process.wait()
            wait_until(lambda: not relays_connected(a)[r1.url], what="A to see r1 gone")
            edit_cell(joined, 3, "after the relay died")
            wait_until(lambda: "after the relay died" in cell_source(notebook, 3), what="sync")

            # B comes back while r1 is dead: the only way to A is B's r2, Redis, A's r0.
            b.shut_down()  # returns once B's daemon is gone
            edit_cell(notebook, 4, "while B was away")
            b.start()
            wait_until(
                lambda: "while B was away" in cell_source(joined, 4), 60, "B to meet A again"
            )
            assert relays_connected(b) == {r1.url: False, r2.url: True}
            # Heard through r2 and r0 (via Redis) alike, A got one connection from B's new
            # run: none was set up and dropped as a duplicate.
            restarted_log = (b.home / "daemon.log").read_text().split(" started: ")[-1]
            assert "-> closed" not in restarted_log
        finally:
            for node in (b, a):
                node.shut_down()


async def flood_presence(url: str, topic: str, connections: int, seconds: float) -> int:
    """Announce on `topic` as strangers with fresh ids, each connection just under the
    relay's rate limit; returns how many answers (addressed presence) came back."""
    answers = 0

    def presence() -> str:
        stranger = secrets.token_hex(8)
        body = {"v": 1, "k": "presence", "from": stranger, "to": ""}
        blob = base64.b64encode(json.dumps(body).encode()).decode()
        data = {"p2prtc": blob, "from": stranger}
        return json.dumps({"type": "publish", "topic": topic, "data": data})

    async def count_answers(ws: ClientConnection) -> None:
        nonlocal answers
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "publish":
                body = json.loads(base64.b64decode(message["data"]["p2prtc"]))
                answers += body["k"] == "presence" and body["to"] != ""

    async def flood(index: int) -> None:
        async with connect(url, proxy=None) as ws:
            reader = None
            if index == 0:  # one listener: the others would have to read the flood too
                await ws.send(json.dumps({"type": "subscribe", "topics": [topic]}))
                reader = asyncio.create_task(count_answers(ws))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await ws.send(presence())
                await asyncio.sleep(1 / 40)
            await asyncio.sleep(1.0)  # answers still on their way
            if reader is not None:
                reader.cancel()

    await asyncio.gather(*(flood(i) for i in range(connections)))
    return answers


def test_a_presence_flood_on_an_invitation_does_not_cut_the_daemon_off(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    with running_signaling_server() as relay:
        a, b = relay_nodes(tmp_path, a=[relay.url], b=[relay.url])
        notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "remote.ipynb")
        try:
            code = a.share(notebook)
            wait_until(lambda: relays_connected(a)[relay.url], what="A on the relay")
            before = asyncio.run(fetch_health(relay.url))["counters"]
            started = time.monotonic()
            topic = invite_topic(code.split("-")[0])
            answers = asyncio.run(flood_presence(relay.url, topic, connections=4, seconds=3.0))
            elapsed = time.monotonic() - started
            after = asyncio.run(fetch_health(relay.url))["counters"]
            # ~500 strangers got a burst of 8 answers, then one a second.
            assert 1 <= answers <= 8 + math.ceil(elapsed), (answers, elapsed)
            # The relay never throttled A, and A never had to reconnect.
            assert after["rate_limited"] == 0
            assert after["connections_accepted"] == before["connections_accepted"] + 4
            assert relays_connected(a) == {relay.url: True}
            joined = Path(b.join(code)["path"])
            assert joined.read_bytes() == notebook.read_bytes()
        finally:
            for node in (b, a):
                node.shut_down()
