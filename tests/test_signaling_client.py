"""The daemon's signaling client against a real relay process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from signaling_server import fetch_health, free_port, signaling_relay, wait_for_health
from websockets.asyncio.client import ClientConnection, connect

from p2prtc.adapters.signaling import (
    Backoff,
    InvalidSignalingURL,
    OnMessage,
    SignalingClient,
    SignalingMessageTooLarge,
    SignalingRateLimited,
    SignalingState,
    SignalingUnavailable,
)

pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT = 10.0

Received = tuple[str, bytes]


class Inbox:
    """An on_message callback that queues what it gets."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Received] = asyncio.Queue()

    async def __call__(self, topic: str, payload: bytes) -> None:
        await self.queue.put((topic, payload))

    async def next(self) -> Received:
        return await asyncio.wait_for(self.queue.get(), RECV_TIMEOUT)


def fast_client(url: str, on_message: OnMessage) -> SignalingClient:
    # Fast reconnects keep the tests short; the backoff itself is tested without a network.
    return SignalingClient(url, on_message, min_backoff=0.05, max_backoff=0.2)


async def started_client(url: str, inbox: Inbox, *topics: str) -> SignalingClient:
    client = fast_client(url, inbox)
    client.start()
    await client.wait_connected(RECV_TIMEOUT)
    for topic in topics:
        await client.subscribe(topic)
    return client


async def raw_client(url: str, *topics: str) -> ClientConnection:
    """A plain y-webrtc style client, subscribed once the relay confirms it."""
    ws = await connect(url, proxy=None)
    await ws.send(json.dumps({"type": "subscribe", "topics": list(topics)}))
    await ws.send(json.dumps({"type": "ping"}))
    while json.loads(await ws.recv())["type"] != "pong":
        pass
    return ws


async def raw_publish(ws: ClientConnection, topic: str, data: Any) -> None:
    await ws.send(json.dumps({"type": "publish", "topic": topic, "data": data}))


def ours(payload: bytes, sender: str = "someone-else") -> dict[str, str]:
    return {"p2prtc": base64.b64encode(payload).decode(), "from": sender}


async def wait_for_state(client: SignalingClient, *states: SignalingState) -> None:
    async def reached() -> None:
        while client.state not in states:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), RECV_TIMEOUT)


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    async with signaling_relay() as relay:
        yield relay.url


async def test_bytes_reach_other_subscribers_but_not_the_sender(relay_url: str) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    alice = await started_client(relay_url, alice_inbox, "room")
    bob = await started_client(relay_url, bob_inbox, "room")
    payload = bytes(range(256)) * 4
    await alice.publish("room", payload)
    assert await bob_inbox.next() == ("room", payload)
    # Alice's echo would have reached her before Bob's answer: it was dropped.
    await bob.publish("room", b"answer")
    assert await alice_inbox.next() == ("room", b"answer")
    assert alice_inbox.queue.empty()
    await alice.close()
    await bob.close()


async def test_messages_that_are_not_ours_are_skipped(relay_url: str) -> None:
    inbox = Inbox()
    client = await started_client(relay_url, inbox, "room")
    stranger = await raw_client(relay_url)
    for data in [
        {"type": "announce", "from": "y-webrtc-peer"},  # another y-webrtc app
        "ZW5jcnlwdGVk",  # y-webrtc with a password: an encrypted string
        {"p2prtc": "not base64!"},
        {"p2prtc": 42},
        None,
    ]:
        await raw_publish(stranger, "room", data)
    await stranger.send(json.dumps({"type": "publish", "topic": "room"}))
    await raw_publish(stranger, "room", ours(b"the real one"))
    assert await inbox.next() == ("room", b"the real one")
    assert inbox.queue.empty()
    assert client.connected
    await stranger.close()
    await client.close()


async def test_subscribe_is_in_place_when_it_returns(relay_url: str) -> None:
    inbox = Inbox()
    client = await started_client(relay_url, inbox)
    publisher = await raw_client(relay_url)
    await client.subscribe("late")
    await raw_publish(publisher, "late", ours(b"x"))
    assert await inbox.next() == ("late", b"x")
    assert client.topics == {"late"}
    await publisher.close()
    await client.close()


async def test_unsubscribe_stops_delivery(relay_url: str) -> None:
    inbox = Inbox()
    client = await started_client(relay_url, inbox, "a", "b")
    publisher = await raw_client(relay_url)
    await client.unsubscribe("a")
    await raw_publish(publisher, "a", ours(b"gone"))
    await raw_publish(publisher, "b", ours(b"kept"))
    assert await inbox.next() == ("b", b"kept")
    assert inbox.queue.empty()
    await publisher.close()
    await client.close()


async def test_a_failing_handler_does_not_stop_delivery(relay_url: str) -> None:
    seen: list[bytes] = []

    async def fragile(topic: str, payload: bytes) -> None:
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("handler bug")

    client = fast_client(relay_url, fragile)
    client.start()
    await client.wait_connected(RECV_TIMEOUT)
    await client.subscribe("room")
    publisher = await raw_client(relay_url)
    await raw_publish(publisher, "room", ours(b"boom"))
    await raw_publish(publisher, "room", ours(b"after"))
    await wait_for_messages(seen, 2)
    assert seen == [b"boom", b"after"]
    assert client.connected
    await publisher.close()
    await client.close()


async def wait_for_messages(seen: list[bytes], count: int) -> None:
    async def arrived() -> None:
        while len(seen) < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(arrived(), RECV_TIMEOUT)


async def test_a_burst_of_publishes_stays_under_the_relays_rate_limit(relay_url: str) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    alice = await started_client(relay_url, alice_inbox, "room")
    bob = await started_client(relay_url, bob_inbox, "room")
    sent = []
    for n in range(400):  # at once: twice the relay's burst
        with contextlib.suppress(SignalingRateLimited):
            await alice.publish("room", n.to_bytes(2, "big"))
            sent.append(n.to_bytes(2, "big"))
    assert 100 <= len(sent) < 400
    for payload in sent:
        assert await bob_inbox.next() == ("room", payload)
    # The relay dropped nothing of ours, so alice's pings keep her connection.
    health = await fetch_health(relay_url)
    assert health["counters"]["rate_limited"] == 0
    assert health["counters"]["connections_accepted"] == 2
    assert alice.connected
    await alice.close()
    await bob.close()


async def test_reconnects_and_subscribes_again_after_a_relay_restart() -> None:
    port = free_port()
    inbox = Inbox()
    topics = [f"topic-{n}" for n in range(100)]  # more than one subscribe batch
    async with signaling_relay(port) as relay:
        client = await started_client(relay.url, inbox, *topics)
        relay.process.send_signal(signal.SIGKILL)  # a crash: no goodbye
        await asyncio.to_thread(relay.process.wait)
        await wait_for_state(client, SignalingState.WAITING, SignalingState.CONNECTING)
        assert not client.connected
        with pytest.raises(SignalingUnavailable):
            await client.publish("topic-1", b"nobody listens")
    async with signaling_relay(port) as relay:
        await client.wait_connected(RECV_TIMEOUT)
        assert (await fetch_health(relay.url))["subscriptions"] == 100
        publisher = await raw_client(relay.url)
        await raw_publish(publisher, "topic-99", ours(b"welcome back"))
        assert await inbox.next() == ("topic-99", b"welcome back")
        await publisher.close()
        await client.close()


async def test_waits_for_a_relay_that_is_not_up_yet() -> None:
    port = free_port()
    inbox = Inbox()
    client = fast_client(f"ws://127.0.0.1:{port}", inbox)
    await client.subscribe("room")  # remembered while offline
    client.start()
    await wait_for_state(client, SignalingState.WAITING)
    async with signaling_relay(port) as relay:
        await client.wait_connected(RECV_TIMEOUT)
        publisher = await raw_client(relay.url)
        await raw_publish(publisher, "room", ours(b"hi"))
        assert await inbox.next() == ("room", b"hi")
        await publisher.close()
        await client.close()


async def test_a_relay_refusing_us_is_retried_with_growing_delays() -> None:
    async with signaling_relay(max_connections_per_address=1) as relay:
        blocker = await raw_client(relay.url)
        client = fast_client(relay.url, Inbox())
        client.start()
        await wait_for_health(relay.url, lambda h: h["counters"]["connections_rejected"] >= 3)
        assert not client.connected
        await blocker.close()
        await client.wait_connected(RECV_TIMEOUT)
        await client.close()


async def test_close_is_final(relay_url: str) -> None:
    async with fast_client(relay_url, Inbox()) as client:
        await client.wait_connected(RECV_TIMEOUT)
    assert client.state is SignalingState.CLOSED
    assert not client.connected
    client.start()
    assert client.state is SignalingState.CLOSED
    with pytest.raises(SignalingUnavailable):
        await client.publish("room", b"x")
    await client.close()
    await wait_for_health(relay_url, lambda h: h["connections"] == 0)


async def test_the_message_handler_may_close_the_client(relay_url: str) -> None:
    async def close_on_message(topic: str, payload: bytes) -> None:
        await client.close()

    client = fast_client(relay_url, close_on_message)
    client.start()
    await client.wait_connected(RECV_TIMEOUT)
    await client.subscribe("room")
    publisher = await raw_client(relay_url)
    await raw_publish(publisher, "room", ours(b"stop"))
    await wait_for_state(client, SignalingState.CLOSED)
    await wait_for_health(relay_url, lambda h: h["connections"] == 1)
    await publisher.close()


async def test_too_large_a_message_is_refused_locally(relay_url: str) -> None:
    client = await started_client(relay_url, Inbox(), "room")
    with pytest.raises(SignalingMessageTooLarge):
        await client.publish("room", b"x" * 64 * 1024)
    await client.publish("room", b"x" * 40 * 1024)
    assert client.connected
    await client.close()


def test_invalid_url_is_a_user_error() -> None:
    with pytest.raises(InvalidSignalingURL) as error:
        SignalingClient("http://example.invalid", Inbox())
    assert str(error.value).startswith("The signaling URL is not a valid ws:// or wss:// URL.")


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    backoff = Backoff(minimum=1.0, maximum=8.0)
    bounds = [1.0, 2.0, 4.0, 8.0, 8.0]
    for bound in bounds:
        assert bound / 2 <= backoff.next_delay() <= bound
    backoff.reset()
    assert backoff.next_delay() <= 1.0
