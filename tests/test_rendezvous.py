"""Rendezvous pipes over real WebSockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from p2prtc.adapters.rendezvous import (
    MAX_MESSAGE_SIZE,
    ConnectFailed,
    Pipe,
    PipeClosed,
    PipeTimeout,
    RendezvousServer,
    connect_pipe,
)

pytestmark = pytest.mark.timeout(20)

HOST = "127.0.0.1"
TIMEOUT = 5.0

ServerFactory = Callable[[Callable[[Pipe], Awaitable[None]]], Awaitable[RendezvousServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    servers: list[RendezvousServer] = []

    async def start(on_pipe: Callable[[Pipe], Awaitable[None]]) -> RendezvousServer:
        server = await RendezvousServer.start(HOST, on_pipe=on_pipe)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def echo_reversed(pipe: Pipe) -> None:
    while True:
        await pipe.send((await pipe.recv())[::-1])


async def test_messages_round_trip_in_order(start_server: ServerFactory) -> None:
    server = await start_server(echo_reversed)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    messages = [b"", b"a", bytes(range(256)), b"x" * (MAX_MESSAGE_SIZE - 1) + b"y"]
    for message in messages:
        await pipe.send(message)
    assert [await pipe.recv(TIMEOUT) for _ in messages] == [m[::-1] for m in messages]
    assert pipe.remote_address == (HOST, server.port)
    await pipe.close()


async def test_server_sees_the_client_address(start_server: ServerFactory) -> None:
    seen: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def record(pipe: Pipe) -> None:
        seen.set_result(pipe.remote_address)

    server = await start_server(record)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    host, port = await asyncio.wait_for(seen, TIMEOUT)
    assert host == HOST and port not in (0, server.port)
    await pipe.close()


async def test_recv_times_out_and_pipe_stays_usable(start_server: ServerFactory) -> None:
    release = asyncio.Event()

    async def late_echo(pipe: Pipe) -> None:
        await release.wait()
        await echo_reversed(pipe)

    server = await start_server(late_echo)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    with pytest.raises(PipeTimeout):
        await pipe.recv(0.05)
    release.set()
    await pipe.send(b"abc")
    assert await pipe.recv(TIMEOUT) == b"cba"
    await pipe.close()


async def test_closing_is_reported_on_the_other_end(start_server: ServerFactory) -> None:
    async def hang_up(pipe: Pipe) -> None:
        await pipe.close()

    server = await start_server(hang_up)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    with pytest.raises(PipeClosed):
        await pipe.recv(TIMEOUT)
    with pytest.raises(PipeClosed):
        await pipe.send(b"anyone?")


async def test_server_close_closes_open_pipes(start_server: ServerFactory) -> None:
    server = await start_server(echo_reversed)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    await server.close()
    with pytest.raises(PipeClosed, match="1001"):
        await pipe.recv(TIMEOUT)


async def test_oversized_send_is_refused(start_server: ServerFactory) -> None:
    server = await start_server(echo_reversed)
    pipe = await connect_pipe(HOST, server.port, TIMEOUT)
    with pytest.raises(ValueError):
        await pipe.send(b"x" * (MAX_MESSAGE_SIZE + 1))
    await pipe.close()


@pytest.mark.parametrize(
    ("message", "code"),
    [(b"x" * (MAX_MESSAGE_SIZE + 1), 1009), ("text", 1003)],
    ids=["oversized", "text"],
)
async def test_misbehaving_peer_is_cut_off(
    start_server: ServerFactory, message: bytes | str, code: int
) -> None:
    failure: asyncio.Future[PipeClosed] = asyncio.get_running_loop().create_future()

    async def receive(pipe: Pipe) -> None:
        try:
            await pipe.recv(TIMEOUT)
        except PipeClosed as exc:
            failure.set_result(exc)

    server = await start_server(receive)
    # A raw client, to send what connect_pipe() never would.
    async with connect(f"ws://{HOST}:{server.port}/", proxy=None, max_size=None) as raw:
        await raw.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    assert isinstance(await asyncio.wait_for(failure, TIMEOUT), PipeClosed)


async def test_unreachable_server_is_reported() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed):
        await connect_pipe(HOST, port, TIMEOUT)
