"""Relays that scale out on Redis: three real relay processes on one real redis-server.

The y-webrtc conformance tests also run against such a cluster (test_signaling_server.py,
parametrized); here: what only a cluster has (exactly-once delivery across relays, Redis
subscriptions that follow the local clients, a lost and restarted Redis, a dead relay).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis_server import RedisServer, relay_cluster, require_redis_server
from signaling_server import (
    REPO_ROOT,
    SECRET,
    SignalingServerProcess,
    fetch_health,
    free_port,
    signaling_relay,
    wait_for_health,
)
from test_signaling_server import open_client, publish, recv, send, subscribe, until_pong
from websockets.asyncio.client import ClientConnection

from signaling.cluster import CHANNEL_PREFIX, RedisLink, redacted

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[list[SignalingServerProcess]]:
    async with relay_cluster(redis_server.url, 3) as relays:
        yield relays


async def relays_subscribed(redis_url: str, topic: str) -> int:
    """How many relays hold a Redis subscription for `topic`."""
    client = Redis.from_url(redis_url)
    try:
        counts = await client.pubsub_numsub(CHANNEL_PREFIX + topic)
        return int(counts[0][1])
    finally:
        await client.aclose()


async def until_unsubscribed(redis_url: str, topic: str, remaining: int) -> None:
    """Wait until `remaining` relays hold `topic`: relays do not wait for Redis to confirm
    an unsubscribe, so it may land a moment after the client's pong."""
    deadline = asyncio.get_running_loop().time() + 10
    while (count := await relays_subscribed(redis_url, topic)) != remaining:
        assert asyncio.get_running_loop().time() < deadline, count
        await asyncio.sleep(0.02)


async def open_on(relays: list[SignalingServerProcess]) -> list[ClientConnection]:
    return [await open_client(relay.url) for relay in relays]


async def one_room_per_relay(relays: list[SignalingServerProcess]) -> list[ClientConnection]:
    """A client on each relay, all subscribed to "room"."""
    clients = await open_on(relays)
    for ws in clients:
        await subscribe(ws, "room")
    return clients


async def test_clients_on_different_relays_get_each_publish_exactly_once(
    cluster: list[SignalingServerProcess],
) -> None:
    alice, bob, carol = await one_room_per_relay(cluster)
    await send(alice, publish("room", n=1))
    for ws in (alice, bob, carol):
        assert (await recv(ws))["data"] == {"n": 1}
    # bob publishes only once Redis handed him alice's message: an echo of it through
    # Redis would reach alice's relay before bob's message, so alice would see it first.
    await send(bob, publish("room", n=2))
    for ws in (alice, bob, carol):
        assert (await recv(ws))["data"] == {"n": 2}
    # A non-subscriber on a third relay publishes too; nobody gets anything twice.
    await send(carol, {"type": "unsubscribe", "topics": ["room"]})
    await until_pong(carol)
    await send(carol, publish("room", n=3))
    for ws in (alice, bob):
        assert (await recv(ws))["data"] == {"n": 3}
    assert await until_pong(carol) == []


async def test_a_relay_subscribes_in_redis_only_to_its_clients_topics(
    redis_server: RedisServer, cluster: list[SignalingServerProcess]
) -> None:
    alice, bob, _ = await open_on(cluster)
    await subscribe(alice, "room", "alice-only")
    await subscribe(bob, "room")
    assert await relays_subscribed(redis_server.url, "room") == 2
    assert await relays_subscribed(redis_server.url, "alice-only") == 1
    await send(alice, {"type": "unsubscribe", "topics": ["alice-only"]})
    await until_unsubscribed(redis_server.url, "alice-only", 0)
    await bob.close()
    await until_unsubscribed(redis_server.url, "room", 1)
    assert await relays_subscribed(redis_server.url, "alice-only") == 0


async def test_relays_recover_when_redis_restarts_and_clients_keep_their_connections(
    redis_server: RedisServer, cluster: list[SignalingServerProcess]
) -> None:
    alice, bob, carol = await one_room_per_relay(cluster)
    redis_server.stop()
    for relay in cluster:
        health = await wait_for_health(relay.url, lambda h: h["status"] == "degraded")
        assert health["redis"]["state"] in ("degraded", "connecting")
    # Degraded, a relay still serves its own clients.
    await send(alice, publish("room", n=1))
    assert (await recv(alice))["data"] == {"n": 1}
    assert await until_pong(alice) == []
    redis_server.start_again()
    for relay in cluster:
        health = await wait_for_health(relay.url, lambda h: h["status"] == "ok", timeout=20)
        assert health["redis"]["reconnects"] >= 1
    # The same connections, subscribed again in Redis by their relays.
    assert await relays_subscribed(redis_server.url, "room") == 3
    await send(bob, publish("room", n=2))
    for ws in (alice, bob, carol):
        assert (await recv(ws))["data"] == {"n": 2}


async def test_a_relay_started_before_redis_serves_its_clients_then_links(
    tmp_path: Path,
) -> None:
    redis = RedisServer(require_redis_server(), free_port(), tmp_path)
    try:
        async with signaling_relay(0, ["--redis", redis.url]) as relay:
            health = await wait_for_health(relay.url, lambda h: h["status"] == "degraded")
            assert health["redis"]["state"] in ("degraded", "connecting")
            (alice,) = await one_room_per_relay([relay])
            await send(alice, publish("room", n=1))
            assert (await recv(alice))["data"] == {"n": 1}
            redis.start_again()
            await wait_for_health(relay.url, lambda h: h["status"] == "ok", timeout=20)
            assert await relays_subscribed(redis.url, "room") == 1
            await alice.close()
    finally:
        redis.stop()


async def test_relays_give_up_a_hung_redis_and_recover_when_it_answers_again(
    redis_server: RedisServer, cluster: list[SignalingServerProcess]
) -> None:
    alice, bob, carol = await one_room_per_relay(cluster)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # connections stay open, no answers
    try:
        for relay in cluster:
            await wait_for_health(relay.url, lambda h: h["status"] == "degraded", timeout=30)
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    for relay in cluster:
        await wait_for_health(relay.url, lambda h: h["status"] == "ok", timeout=30)
    await send(bob, publish("room", n=1))
    for ws in (alice, bob, carol):
        assert (await recv(ws))["data"] == {"n": 1}


async def test_cluster_logs_carry_no_topic_payload_or_redis_password(tmp_path: Path) -> None:
    redis = RedisServer.start(tmp_path)
    password_url = redis.url.replace("redis://", f"redis://:hunter2-{SECRET}@")
    try:
        async with relay_cluster(password_url, 2) as relays:
            # This Redis wants no password: Redis 7 accepts any with the default user.
            first, second = await open_on(relays)
            await subscribe(second, f"secret-topic-{SECRET}")
            await send(first, publish(f"secret-topic-{SECRET}", blob=f"secret-payload-{SECRET}"))
            await recv(second)
            redis.stop()
            await wait_for_health(relays[0].url, lambda h: h["status"] == "degraded")
            health = await fetch_health(relays[0].url)
            logs = "".join(relay.log_path.read_text() for relay in relays)
    finally:
        redis.stop()
    assert SECRET not in logs + json.dumps(health)
    events = {json.loads(line)["event"] for line in logs.splitlines()}
    assert {"redis.state", "redis.lost"} <= events


async def test_a_relay_killed_mid_run_leaves_the_others_serving(
    cluster: list[SignalingServerProcess],
) -> None:
    alice, _on_the_dead_relay, carol = await one_room_per_relay(cluster)
    cluster[1].process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(cluster[1].process.wait)
    await send(alice, publish("room", n=1))
    assert (await recv(carol))["data"] == {"n": 1}
    assert (await fetch_health(cluster[2].url))["status"] == "ok"


async def test_limits_per_connection_hold_in_a_cluster(redis_server: RedisServer) -> None:
    async with relay_cluster(redis_server.url, 2, max_topics_per_connection=2) as relays:
        ws = await open_client(relays[0].url)
        refused = await subscribe(ws, "a", "b", "c")
        assert [(m["error"], m["topics"]) for m in refused] == [("too-many-topics", ["c"])]
        assert await relays_subscribed(redis_server.url, "c") == 0


async def test_what_is_not_a_relays_message_in_redis_is_not_passed_on(
    redis_server: RedisServer, cluster: list[SignalingServerProcess]
) -> None:
    (alice,) = await one_room_per_relay(cluster[:1])
    intruder = Redis.from_url(redis_server.url)
    try:
        for junk in (b"no-space", b"relay-id not json", b"relay-id \xff\xfe", b"x [1]"):
            await intruder.publish(CHANNEL_PREFIX + "room", junk)
        await intruder.publish(CHANNEL_PREFIX + "room", b'other-relay {"type":"publish"}')
    finally:
        await intruder.aclose()
    assert await recv(alice) == {"type": "publish", "clients": 1}
    health = await fetch_health(cluster[0].url)
    assert (health["redis"]["refused"], health["redis"]["received"]) == (4, 1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_cli_refuses_a_url_that_is_not_redis(url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "signaling", "--port", "0", "--redis", url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--redis needs a redis://, rediss:// or unix:// URL" in result.stderr


def test_the_redis_password_is_never_shown() -> None:
    assert redacted("redis://:hunter2@db:6379/0") == "redis://db:6379/0"
    assert redacted("rediss://user:hunter2@db/1") == "rediss://user@db/1"
    assert redacted("redis://:hunter2@[::1]:6379/0") == "redis://[::1]:6379/0"
    assert redacted("redis://db:6379/0") == "redis://db:6379/0"


async def test_a_link_to_a_redis_that_is_gone_closes_whenever_asked() -> None:
    """A relay stopped while Redis is down must exit: its link's reconnect loop ends on
    close, whatever it was doing (a cancellation landing as a connect failed was swallowed,
    and the relay never exited)."""
    port = free_port()  # nothing listens: every connect is refused at once
    for attempt in range(200):
        link = RedisLink(f"redis://127.0.0.1:{port}/0", print, list, min_backoff=0, max_backoff=0)
        link.start()
        await asyncio.sleep(attempt % 7 * 0.0005)
        await asyncio.wait_for(link.close(), timeout=5)
