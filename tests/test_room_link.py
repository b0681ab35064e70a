"""The room link (core/roomlink.py, daemon/rooms.py): a Jupyter room's stream on the control
socket, played here by a raw client against a real daemon; the messages without any I/O."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import (
    Node,
    copy_notebook,
    edit_cell,
    loopback_nodes,
    notebook_problem,
    read_notebook,
    stored_updates,
)
from jupyter_servers import until
from jupyter_ydoc import YNotebook

from p2prtc import control, paths
from p2prtc.core import roomlink
from p2prtc.core.ratelimit import TokenBucket
from p2prtc.daemon.peer_control import AWARENESS_BURST

NOTEBOOK = "lists.ipynb"
QUEUE_BOUND = 256 * 1024


# --- the messages, sans-IO ---------------------------------------------------------------


def test_messages_round_trip() -> None:
    request = roomlink.attach_request("/x/nb.ipynb", b"\x00", "tab")
    assert request["cmd"] == roomlink.ATTACH
    assert roomlink.unb64(request, "state_vector") == b"\x00"
    assert roomlink.parse_message(roomlink.update_message(b"\x01\x02")) == roomlink.Update(
        b"\x01\x02"
    )
    assert roomlink.parse_message(roomlink.detached_message("left")) == roomlink.Detached("left")


@pytest.mark.parametrize(
    "message",
    [{}, {"update": 3}, {"update": "not base64!"}, {"detached": None}, {"other": "x"}],
)
def test_malformed_messages_are_refused_with_a_clear_error(message: dict[str, Any]) -> None:
    with pytest.raises(roomlink.RoomLinkError):
        roomlink.parse_message(message)


# --- a real daemon ---------------------------------------------------------------------


@pytest.fixture
def shared(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[Node, Path]]:
    (node,) = loopback_nodes(tmp_path, "a")
    node.env["P2PRTC_MAX_QUEUED_BYTES"] = str(QUEUE_BOUND)
    notebook = copy_notebook(notebooks_dir / NOTEBOOK, node.workdir / NOTEBOOK)
    node.share(notebook)
    try:
        yield node, notebook
    finally:
        node.shut_down()


class RawRoom:
    """The Jupyter side of a room link, by hand: a YNotebook and the socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.notebook = YNotebook()
        self.awareness: list[bytes] = []

    async def receive(self) -> None:
        """Apply the daemon's updates (and keep its awareness updates) until the link ends."""
        while line := await self.reader.readline():
            message = roomlink.parse_message(control.decode_message(line))
            if isinstance(message, roomlink.Awareness):
                self.awareness.append(message.update)
            else:
                assert isinstance(message, roomlink.Update)
                self.notebook.ydoc.apply_update(message.update)

    def send(self, message: dict[str, Any]) -> None:
        self.writer.write(control.encode_message(message))

    def type(self, cell: int, text: str) -> None:
        """Edit the local doc like a tab and send that update to the daemon."""
        doc = self.notebook.ydoc
        before = doc.get_state()
        source = self.notebook.ycells[cell]["source"]
        source.insert(len(source), text)
        self.send(roomlink.update_message(doc.get_update(before)))

    def source(self, cell: int) -> str:
        return str(self.notebook.ycells[cell]["source"])


async def attach(node: Node, path: Path) -> tuple[dict[str, Any], asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_unix_connection(
        paths.control_socket(node.home), limit=control.MAX_LINE
    )
    writer.write(
        control.encode_message(roomlink.attach_request(str(path), b"\x00", "raw test room"))
    )
    return control.decode_message(await reader.readline()), reader, writer


@contextlib.asynccontextmanager
async def attached(node: Node, path: Path) -> AsyncIterator[RawRoom]:
    answer, reader, writer = await attach(node, path)
    assert answer["ok"] is True, answer
    room = RawRoom(reader, writer)
    room.notebook.ydoc.apply_update(roomlink.unb64(answer, "update"))
    receiving = asyncio.create_task(room.receive())
    try:
        yield room
    finally:
        writer.close()
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await receiving


def rooms(node: Node) -> list[str]:
    return list(node.status()["shares"][0]["rooms"])


async def test_a_room_gets_the_doc_and_edits_flow_both_ways_with_the_file(
    shared: tuple[Node, Path],
) -> None:
    node, notebook = shared
    async with attached(node, notebook) as room:
        sources = [cell["source"] for cell in room.notebook.get()["cells"]]
        assert sources == ["".join(cell["source"]) for cell in read_notebook(notebook)["cells"]]
        assert await asyncio.to_thread(rooms, node) == ["raw test room"]
        room.type(0, "typed in the room")
        await until(lambda: "typed in the room" in notebook.read_text(), what="the daemon write")
        await asyncio.to_thread(edit_cell, notebook, 1, "# saved by an editor")
        await until(lambda: "# saved by an editor" in room.source(1), what="the editor's save")
        assert room.source(0).endswith("typed in the room")
    await until(lambda: not rooms(node), what="the room to leave status")


async def test_a_room_sending_garbage_is_dropped_and_the_daemon_and_file_stay_fine(
    shared: tuple[Node, Path],
) -> None:
    node, notebook = shared
    before = notebook.read_bytes()
    for garbage in (b"not json\n", b'{"update": "////"}\n', json.dumps({"x": 1}).encode() + b"\n"):
        _, reader, writer = await attach(node, notebook)
        writer.write(garbage)
        assert await asyncio.wait_for(reader.read(), 10) == b"", "the link is closed"
        writer.close()
    assert await asyncio.to_thread(rooms, node) == []
    assert notebook.read_bytes() == before
    assert notebook_problem(notebook) is None


async def test_attaching_a_file_that_is_not_shared_is_refused(
    shared: tuple[Node, Path], tmp_path: Path
) -> None:
    node, _ = shared
    answer, _, writer = await attach(node, tmp_path / "elsewhere.ipynb")
    writer.close()
    assert answer["ok"] is False
    assert answer["kind"] == "NotSharedForRoom"
    assert "not shared" in answer["error"]


def test_a_token_bucket_lets_a_burst_then_the_rate_through() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.allow(0.05) is False  # half a token back
    assert bucket.allow(0.1) is True
    assert [bucket.allow(100.0) for _ in range(4)] == [True, True, True, False]


async def test_awareness_reaches_the_other_rooms_rate_limited_and_is_never_stored(
    shared: tuple[Node, Path],
) -> None:
    node, notebook = shared
    stored_before = stored_updates(node.home)
    async with attached(node, notebook) as sender, attached(node, notebook) as receiver:
        flood = [f"cursor {i}".encode() for i in range(200)]
        for update in flood:
            sender.send(roomlink.awareness_message(update))
        await until(lambda: len(receiver.awareness) >= AWARENESS_BURST, what="awareness")
        await asyncio.sleep(0.3)  # what else passes the limit meanwhile
        assert receiver.awareness == flood[: len(receiver.awareness)]
        assert len(receiver.awareness) < len(flood) / 2, "the flood was not limited"
        assert sender.awareness == [], "not echoed to its sender"
    assert stored_updates(node.home) == stored_before


@pytest.mark.slow
async def test_a_room_that_stops_reading_is_dropped_not_buffered_forever(
    shared: tuple[Node, Path],
) -> None:
    node, notebook = shared
    _, _, writer = await attach(node, notebook)  # never reads again
    assert await asyncio.to_thread(rooms, node) == ["raw test room"]
    big = "x" * 100_000
    for index in range(12):  # 1.2 MB of edits: past the socket's buffers and the bound
        await asyncio.to_thread(edit_cell, notebook, 0, f"{big} {index}")
    await until(lambda: not rooms(node), what="the stuck room to be dropped")
    writer.close()
    async with attached(node, notebook) as room:  # attaching again gets everything
        assert room.source(0).startswith(f"{big} 11")
