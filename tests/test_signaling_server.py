"""The signaling relay: y-webrtc protocol, limits, hardening, health, shutdown, load.

Everything network-facing runs against a real relay process on 127.0.0.1 (see
tests/signaling_server.py). "Nothing else arrived" is checked with a ping barrier: the
relay handles a connection's messages in order and writes relayed messages at once, so
anything sent to a client before its pong arrives before the pong.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis_server import RedisServer, relay_cluster
from signaling_server import (
    REPO_ROOT,
    SECRET,
    SignalingServerProcess,
    fetch_health,
    signaling_relay,
    wait_for_health,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from signaling.limits import ConnectionSlots, Limits, TokenBucket
from signaling.loadgen import LoadPlan, run_load
from signaling.protocol import (
    ErrorCode,
    Ping,
    ProtocolError,
    Publish,
    Subscribe,
    Unsubscribe,
    parse_message,
)
from signaling.topics import TopicTable

pytestmark = pytest.mark.timeout(60)

RECV_TIMEOUT = 10.0


# --- helpers ------------------------------------------------------------------------


async def open_client(url: str, **kwargs: Any) -> ClientConnection:
    return await connect(url, proxy=None, **kwargs)


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(json.dumps(message))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    return message


async def until_pong(ws: ClientConnection) -> list[dict[str, Any]]:
    """Ping, and return every message that arrived before the pong."""
    await send(ws, {"type": "ping"})
    before = []
    while (message := await recv(ws)) != {"type": "pong"}:
        before.append(message)
    return before


async def subscribe(ws: ClientConnection, *topics: str) -> list[dict[str, Any]]:
    """Subscribe and wait until the relay has handled it; returns its answers (errors)."""
    await send(ws, {"type": "subscribe", "topics": list(topics)})
    return await until_pong(ws)


async def assert_closed_with(ws: ClientConnection, code: int) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


def publish(topic: str, **data: Any) -> dict[str, Any]:
    return {"type": "publish", "topic": topic, "data": data}


ONE_RELAY, CLUSTER = "one relay", "three relays on redis"
# The y-webrtc protocol holds for one relay and for a cluster whose clients sit on
# different relays; `relays` is parametrized indirectly (default: one relay).
conformance = pytest.mark.parametrize("relays", [ONE_RELAY, CLUSTER], indirect=True)


@pytest.fixture
async def relays(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[SignalingServerProcess]]:
    if getattr(request, "param", ONE_RELAY) == ONE_RELAY:
        async with signaling_relay() as server:
            yield [server]
        return
    redis = RedisServer.start(tmp_path)
    try:
        async with relay_cluster(redis.url, 3) as cluster:
            yield cluster
    finally:
        redis.stop()


@pytest.fixture
def relay(relays: list[SignalingServerProcess]) -> SignalingServerProcess:
    """The relay of the first client."""
    return relays[0]


@pytest.fixture
async def clients(
    relays: list[SignalingServerProcess],
) -> AsyncIterator[list[ClientConnection]]:
    """Three clients; in a cluster each on another relay."""
    connections = [await open_client(relays[i % len(relays)].url) for i in range(3)]
    yield connections
    for ws in connections:
        await ws.close()


# --- pure parts ---------------------------------------------------------------------


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5)  # one token back after 1/rate... half a second at 2/s
    assert not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_connection_slots_count_per_address_and_total() -> None:
    slots = ConnectionSlots(per_address=2, total=3)
    assert slots.acquire("a") and slots.acquire("a")
    assert not slots.acquire("a")
    assert slots.acquire("b")
    assert not slots.acquire("c")
    slots.release("a")
    assert slots.acquire("c")
    assert slots.open == 3


def test_topic_table_limits_and_frees_empty_topics() -> None:
    table: TopicTable[str] = TopicTable(
        max_topics_per_connection=2, max_subscribers_per_topic=2, max_topic_length=5
    )
    assert table.subscribe("c1", "t1") is None
    assert table.subscribe("c1", "t1") is None  # idempotent
    assert table.subscribe("c1", "t2") is None
    assert table.subscribe("c1", "t3") is ErrorCode.TOO_MANY_TOPICS
    assert table.subscribe("c2", "t1") is None
    assert table.subscribe("c3", "t1") is ErrorCode.TOPIC_FULL
    assert table.subscribe("c3", "toolong") is ErrorCode.TOPIC_TOO_LONG
    assert set(table.subscribers("t1")) == {"c1", "c2"}
    assert (table.topic_count, table.subscription_count) == (2, 3)
    # What each change frees tells a clustered relay which Redis channels to drop.
    assert table.remove("c1") == ["t2"]
    assert table.topics() == ["t1"] and "t1" in table and "t2" not in table
    assert table.unsubscribe("c2", "t1") is True
    assert table.unsubscribe("c2", "t1") is False
    assert (table.topic_count, table.subscription_count) == (0, 0)
    assert table.subscribers("t1") == ()


def test_parse_message_accepts_the_y_webrtc_message_set() -> None:
    assert parse_message('{"type":"subscribe","topics":["a",1,"b"]}') == Subscribe(("a", "b"))
    assert parse_message(b'{"type":"unsubscribe"}') == Unsubscribe(())
    assert parse_message('{"type":"ping"}') == Ping()
    message = {"type": "publish", "topic": "t", "data": {"x": [1]}, "extra": None}
    assert parse_message(json.dumps(message)) == Publish("t", message)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{", ErrorCode.MALFORMED),
        ("[1]", ErrorCode.MALFORMED),
        ('{"topics":[]}', ErrorCode.MALFORMED),
        ('{"type":"subscribe","topics":"a"}', ErrorCode.MALFORMED),
        ('{"type":"publish","data":{}}', ErrorCode.MALFORMED),
        ('{"type":"publish","topic":"","data":{}}', ErrorCode.MALFORMED),
        ('{"type":"publish","topic":"t","data":NaN}', ErrorCode.MALFORMED),
        ("[" * 50_000, ErrorCode.MALFORMED),
        (b"\xff\xfe", ErrorCode.MALFORMED),
        ('{"type":"announce"}', ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_parse_message_rejects_bad_input(raw: str | bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as error:
        parse_message(raw)
    assert error.value.code is code


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_topics_per_connection"):
        Limits(max_topics_per_connection=0)


# --- protocol conformance -----------------------------------------------------------


@conformance
async def test_publish_reaches_every_subscriber_including_the_sender(
    relays: list[SignalingServerProcess], clients: list[ClientConnection]
) -> None:
    alice, bob, carol = clients
    await subscribe(alice, "room")
    await subscribe(bob, "room")
    await subscribe(carol, "elsewhere")
    message = {"type": "publish", "topic": "room", "data": {"sdp": "v=0", "n": [1, 2]}, "x": 1}
    await send(alice, message)
    # `clients`: the receivers on the relay that delivers it (alice and bob share one relay,
    # or each has its own).
    relayed = {**message, "clients": 2 if len(relays) == 1 else 1}
    assert await recv(alice) == relayed
    assert await recv(bob) == relayed
    assert await until_pong(carol) == []
    assert await until_pong(alice) == []  # once, not again through Redis


@conformance
async def test_publish_from_a_non_subscriber_is_relayed(
    clients: list[ClientConnection],
) -> None:
    alice, bob, outsider = clients
    await subscribe(alice, "room")
    await subscribe(bob, "room")
    await send(outsider, publish("room", hello=1))
    assert (await recv(alice))["data"] == {"hello": 1}
    assert (await recv(bob))["data"] == {"hello": 1}
    assert await until_pong(outsider) == []


@conformance
async def test_unsubscribe_stops_delivery_and_frees_the_topic(
    relay: SignalingServerProcess, clients: list[ClientConnection]
) -> None:
    alice, bob, _ = clients
    await subscribe(alice, "room", "other")
    await subscribe(bob, "room")
    await send(alice, {"type": "unsubscribe", "topics": ["room", "never-subscribed"]})
    await until_pong(alice)
    await send(bob, publish("room", n=1))
    assert (await recv(bob))["clients"] == 1
    assert await until_pong(alice) == []
    await send(bob, {"type": "unsubscribe", "topics": ["room"]})
    await until_pong(bob)
    health = await fetch_health(relay.url)
    assert (health["topics"], health["subscriptions"]) == (1, 1)


@conformance
async def test_ping_is_answered_with_pong(clients: list[ClientConnection]) -> None:
    await send(clients[0], {"type": "ping"})
    assert await recv(clients[0]) == {"type": "pong"}


@conformance
async def test_subscribe_skips_topics_that_are_not_strings(
    relay: SignalingServerProcess, clients: list[ClientConnection]
) -> None:
    assert await subscribe(clients[0], "room", 7, None, ["x"]) == []  # type: ignore[arg-type]
    assert (await fetch_health(relay.url))["subscriptions"] == 1


@conformance
async def test_binary_json_frames_are_understood(clients: list[ClientConnection]) -> None:
    alice = clients[0]
    await alice.send(json.dumps({"type": "subscribe", "topics": ["room"]}).encode())
    await alice.send(json.dumps(publish("room", n=1)).encode())
    assert (await recv(alice))["data"] == {"n": 1}


@conformance
async def test_publish_to_an_empty_topic_goes_nowhere(
    relay: SignalingServerProcess, clients: list[ClientConnection]
) -> None:
    await send(clients[0], publish("nobody-here", n=1))
    assert await until_pong(clients[0]) == []
    counters = (await fetch_health(relay.url))["counters"]
    assert (counters["publishes"], counters["publishes_unrouted"]) == (1, 1)


@conformance
async def test_disconnect_frees_topics_and_slots(relay: SignalingServerProcess) -> None:
    ws = await open_client(relay.url)
    await subscribe(ws, "a", "b")
    assert (await fetch_health(relay.url))["topics"] == 2
    await ws.close()
    health = await wait_for_health(relay.url, lambda h: h["connections"] == 0)
    assert (health["topics"], health["subscriptions"]) == (0, 0)


# --- malformed input ----------------------------------------------------------------


@conformance
@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not json", "malformed"),
        ('"a string"', "malformed"),
        ("{}", "malformed"),
        ('{"type":"subscribe","topics":{"a":1}}', "malformed"),
        ('{"type":"publish","topic":42}', "malformed"),
        ('{"type":"publish","topic":"room","data":Infinity}', "malformed"),
        ("[" * 30_000, "malformed"),
        (b"\xc3\x28", "malformed"),
        ('{"type":"announce","topics":["room"]}', "unknown-type"),
    ],
)
async def test_bad_input_is_answered_and_harms_no_one(
    clients: list[ClientConnection], raw: str | bytes, error: str
) -> None:
    attacker, alice, bob = clients
    await subscribe(alice, "room")
    await subscribe(bob, "room")
    await attacker.send(raw)
    answer = await recv(attacker)
    assert (answer["type"], answer["error"]) == ("error", error)
    # The attacker's connection still works, and so does everyone else's.
    assert await until_pong(attacker) == []
    await send(alice, publish("room", n=1))
    assert (await recv(bob))["data"] == {"n": 1}


# --- limits -------------------------------------------------------------------------


async def test_oversized_message_closes_only_that_connection() -> None:
    async with signaling_relay(max_message_bytes=1024) as relay:
        big, other = await open_client(relay.url), await open_client(relay.url)
        await subscribe(other, "room")
        await send(big, publish("room", pad="x" * 900))  # just under the limit: relayed
        assert (await recv(other))["data"]["pad"] == "x" * 900
        await send(big, publish("room", pad="x" * 2000))
        await assert_closed_with(big, 1009)
        assert await until_pong(other) == []
        health = await fetch_health(relay.url)
        assert health["counters"]["closed_oversized"] == 1
        await other.close()


async def test_topics_per_connection_are_capped() -> None:
    async with signaling_relay(max_topics_per_connection=2) as relay:
        ws, publisher = await open_client(relay.url), await open_client(relay.url)
        answers = await subscribe(ws, "a", "b", "c")
        assert answers == [
            {
                "type": "error",
                "error": "too-many-topics",
                "detail": "subscription refused",
                "topics": ["c"],
            }
        ]
        await send(publisher, publish("c", n=1))
        assert await until_pong(ws) == []
        await send(ws, {"type": "unsubscribe", "topics": ["a"]})
        assert await subscribe(ws, "c") == []
        await send(publisher, publish("c", n=2))
        assert (await recv(ws))["data"] == {"n": 2}
        assert (await fetch_health(relay.url))["counters"]["subscriptions_refused"] == 1


async def test_subscribers_per_topic_are_capped() -> None:
    async with signaling_relay(max_subscribers_per_topic=2) as relay:
        first, second, third = [await open_client(relay.url) for _ in range(3)]
        await subscribe(first, "room")
        await subscribe(second, "room")
        [refusal] = await subscribe(third, "room")
        assert (refusal["error"], refusal["topics"]) == ("topic-full", ["room"])
        await first.close()
        await wait_for_health(relay.url, lambda h: h["connections"] == 2)
        assert await subscribe(third, "room") == []


async def test_long_topic_names_are_refused() -> None:
    async with signaling_relay(max_topic_length=8) as relay:
        ws = await open_client(relay.url)
        [refusal] = await subscribe(ws, "12345678", "123456789")
        assert (refusal["error"], refusal["topics"]) == ("topic-too-long", ["123456789"])
        assert (await fetch_health(relay.url))["subscriptions"] == 1


async def test_message_rate_is_limited_per_connection() -> None:
    async with signaling_relay(messages_per_second=1, message_burst=5) as relay:
        flooder, calm = await open_client(relay.url), await open_client(relay.url)
        for _ in range(10):
            await send(flooder, {"type": "ping"})
        answers = [await recv(flooder) for _ in range(6)]
        assert answers[:5] == [{"type": "pong"}] * 5
        assert (answers[5]["type"], answers[5]["error"]) == ("error", "rate-limited")
        # Only one error for the whole flood, and the other connection is not limited.
        await send(calm, {"type": "ping"})
        assert await recv(calm) == {"type": "pong"}
        await asyncio.sleep(1.2)  # the bucket refills at 1 message per second
        assert await until_pong(flooder) == []
        counters = (await fetch_health(relay.url))["counters"]
        assert counters["rate_limited"] == 5


@pytest.mark.parametrize(
    ("per_address", "total"), [(2, 100), (100, 2)], ids=["per-address", "total"]
)
async def test_connections_are_capped(per_address: int, total: int) -> None:
    async with signaling_relay(
        max_connections_per_address=per_address, max_connections=total
    ) as relay:
        first, second = await open_client(relay.url), await open_client(relay.url)
        third = await open_client(relay.url)
        await assert_closed_with(third, 1013)
        await first.close()
        await wait_for_health(relay.url, lambda h: h["connections"] == 1)
        fourth = await open_client(relay.url)
        assert await until_pong(fourth) == []
        assert (await fetch_health(relay.url))["counters"]["connections_rejected"] == 1
        await second.close()
        await fourth.close()


async def test_real_ip_header_sets_the_address_behind_a_proxy() -> None:
    proxy_args = ["--real-ip-header", "X-Forwarded-For"]
    async with signaling_relay(extra_args=proxy_args, max_connections_per_address=1) as relay:

        async def from_address(address: str) -> ClientConnection:
            headers = {"X-Forwarded-For": f"203.0.113.9, {address}"}
            return await open_client(relay.url, additional_headers=headers)

        first = await from_address("10.0.0.1")
        other = await from_address("10.0.0.2")
        assert await until_pong(other) == []
        same = await from_address("10.0.0.1")
        await assert_closed_with(same, 1013)
        await first.close()
        await other.close()


async def test_idle_connections_are_closed_and_busy_ones_kept() -> None:
    async with signaling_relay(idle_timeout=1.0) as relay:
        idle, busy = await open_client(relay.url), await open_client(relay.url)
        for _ in range(12):  # 2.4 s of activity, over twice the idle timeout
            assert await until_pong(busy) == []
            await asyncio.sleep(0.2)
        await assert_closed_with(idle, 1000)
        assert await until_pong(busy) == []
        assert (await fetch_health(relay.url))["counters"]["closed_idle"] == 1
        await busy.close()


async def test_peers_that_do_not_answer_pings_are_dropped() -> None:
    async with signaling_relay(ping_interval=0.2, ping_timeout=0.2) as relay:
        # A raw TCP client that completes the handshake and then never answers anything.
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        responsive = await open_client(relay.url)  # websockets answers pings by itself
        await asyncio.wait_for(reader.read(), RECV_TIMEOUT)  # returns at EOF: dropped
        writer.close()
        assert await until_pong(responsive) == []
        await responsive.close()


async def test_a_receiver_that_does_not_read_is_dropped_not_waited_for() -> None:
    async with signaling_relay(
        max_send_buffer_bytes=64 * 1024, messages_per_second=10_000, message_burst=10_000
    ) as relay:
        # A tiny receive buffer and max_queue=1: this client soon stops reading.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.port))
        stalled = await open_client(relay.url, sock=sock, max_queue=1)
        reader, publisher = await open_client(relay.url), await open_client(relay.url)
        await subscribe(stalled, "room")
        await subscribe(reader, "room")
        sent = 0
        # Lockstep with the reader, so only the stalled client can fall behind.
        while (await fetch_health(relay.url))["counters"]["closed_slow"] == 0:
            assert sent < 2000, "the stalled receiver was never dropped"
            for _ in range(20):
                await send(publisher, publish("room", seq=sent, pad="x" * 16_000))
                assert (await recv(reader))["data"]["seq"] == sent
                sent += 1
        await send(publisher, publish("room", seq=sent))
        assert (await recv(reader))["data"]["seq"] == sent
        await reader.close()
        await publisher.close()
        stalled.transport.abort()


# --- health, logs, lifecycle, command line ------------------------------------------


async def test_health_endpoint_reports_gauges_counters_and_limits(
    relay: SignalingServerProcess, clients: list[ClientConnection]
) -> None:
    alice, bob, _ = clients
    await subscribe(alice, "room")
    await subscribe(bob, "room")
    await send(alice, publish("room", n=1))
    await recv(bob)
    await until_pong(alice)
    health = await fetch_health(relay.url)
    assert health["status"] == "ok"
    assert (health["connections"], health["topics"], health["subscriptions"]) == (3, 1, 2)
    assert health["counters"]["publishes"] == 1
    assert health["counters"]["deliveries"] == 2
    assert health["counters"]["connections_accepted"] == 3
    assert health["limits"] == Limits().as_dict()
    assert health["memory_rss_bytes"] > 0


async def test_plain_http_elsewhere_is_refused_without_harm(
    relay: SignalingServerProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 426")
    writer.close()
    assert (await fetch_health(relay.url))["status"] == "ok"


async def test_logs_are_json_and_never_carry_topics_or_payloads() -> None:
    async with signaling_relay() as relay:
        ws = await open_client(relay.url)
        await subscribe(ws, f"secret-topic-{SECRET}")
        await send(ws, publish(f"secret-topic-{SECRET}", blob=f"secret-payload-{SECRET}"))
        await recv(ws)
        await ws.send(f"secret-garbage-{SECRET}")
        await recv(ws)
        await ws.close()
        await wait_for_health(relay.url, lambda h: h["connections"] == 0)
        assert await asyncio.to_thread(relay.stop) == 0
        text = relay.log_path.read_text()
        records = relay.log_records()
    assert SECRET not in text
    events = [record["event"] for record in records]
    assert {"server.start", "connection.open", "connection.close", "server.stopped"} <= set(events)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_shuts_down_gracefully(signum: int) -> None:
    async with signaling_relay() as relay:
        ws = await open_client(relay.url)
        await subscribe(ws, "room")
        relay.process.send_signal(signum)
        await assert_closed_with(ws, 1001)
        assert await asyncio.to_thread(relay.process.wait, 10) == 0
        stopped = [r for r in relay.log_records() if r["event"] == "server.stopped"]
        assert stopped[0]["connections_accepted"] == 1


def write_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_wss(tmp_path: Path) -> None:
    cert, key = write_self_signed_certificate(tmp_path)
    tls_args = ["--certfile", str(cert), "--keyfile", str(key)]
    async with signaling_relay(extra_args=tls_args) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        ws = await open_client(relay.url, ssl=trust)
        assert await until_pong(ws) == []
        await ws.close()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "signaling", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_help_lists_every_limit() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for limit in Limits().as_dict():
        assert "--" + limit.replace("_", "-") in result.stdout


def test_cli_rejects_a_limit_that_is_not_positive() -> None:
    result = run_cli("--port", "0", "--max-topics-per-connection", "0")
    assert result.returncode == 2
    assert "max_topics_per_connection must be positive" in result.stderr


def test_cli_reports_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("--host", "127.0.0.1", "--port", str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


# --- load ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_load_loses_nothing_and_memory_returns_near_baseline() -> None:
    """500 clients on 50 topics, twice: every message delivered once, nothing kept."""
    plan = LoadPlan(clients=500, topics=50, messages_per_client=10)
    async with signaling_relay(max_connections_per_address=1000) as relay:
        baseline = (await fetch_health(relay.url))["memory_rss_bytes"]
        after_rounds = []
        for _ in range(2):
            report = await run_load([relay.url], plan)
            assert (report.lost, report.duplicated) == (0, 0), report
            assert report.delivered == 500 * 10 * 10
            health = await wait_for_health(relay.url, lambda h: h["connections"] == 0)
            assert (health["topics"], health["subscriptions"]) == (0, 0)
            after_rounds.append(health["memory_rss_bytes"])
    mib = 1024 * 1024
    # The first round may grow the allocator's arenas; a second one must not add more.
    assert after_rounds[1] - after_rounds[0] < 8 * mib, (baseline, after_rounds)
    assert after_rounds[1] - baseline < 40 * mib, (baseline, after_rounds)
