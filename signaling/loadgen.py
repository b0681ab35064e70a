"""Load generator: many well-behaved y-webrtc clients on relays, counting what is lost.

Client `i` connects to relay `i % len(urls)` (one relay, or a cluster sharing Redis) and
subscribes to topic `i % topics`, then every client publishes `messages_per_client`
messages, paced under the relay's rate limit. Every subscriber of a topic must receive
every message published to it once, its own included (y-webrtc relays to the sender
too). Used by the test suite and scripts/bench_signaling.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


@dataclass(frozen=True)
class LoadPlan:
    clients: int = 500
    topics: int = 50
    messages_per_client: int = 10
    payload_bytes: int = 200
    send_interval: float = 0.05
    """Seconds between two publishes of one client (keep under the relay's rate limit)."""
    connect_concurrency: int = 50
    """Handshakes in flight at once: more would overflow the listen backlog."""
    deadline: float = 20.0
    """Seconds to wait for all deliveries once publishing is over."""


@dataclass
class LoadReport:
    clients: int
    topics: int
    published: int
    expected_deliveries: int
    delivered: int
    lost: int
    duplicated: int
    connect_seconds: float
    run_seconds: float
    deliveries_per_second: float
    latency_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LoadClient:
    def __init__(self, index: int, topic: str, expected: int) -> None:
        self.index = index
        self.topic = topic
        self.expected = expected
        self.seen: set[tuple[int, int]] = set()
        self.duplicated = 0
        self.latencies: list[float] = []
        self.complete = asyncio.Event()
        self.ws: ClientConnection | None = None

    async def open(self, url: str) -> None:
        self.ws = await connect(url, proxy=None, compression=None, max_size=None)
        await self.ws.send(json.dumps({"type": "subscribe", "topics": [self.topic]}))
        # The relay handles one connection's messages in order: the pong proves the
        # subscription is in place before anyone publishes.
        await self.ws.send(json.dumps({"type": "ping"}))
        while json.loads(await self.ws.recv()).get("type") != "pong":
            pass

    async def publish_all(
        self, count: int, payload_bytes: int, interval: float, offset: float
    ) -> None:
        assert self.ws is not None
        padding = "x" * payload_bytes
        await asyncio.sleep(offset)
        for seq in range(count):
            data = {"from": self.index, "seq": seq, "sent": time.perf_counter(), "pad": padding}
            await self.ws.send(json.dumps({"type": "publish", "topic": self.topic, "data": data}))
            await asyncio.sleep(interval)

    async def read_all(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                self._on_message(json.loads(raw))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "publish":
            return
        data = message["data"]
        key = (data["from"], data["seq"])
        if key in self.seen:
            self.duplicated += 1
            return
        self.seen.add(key)
        self.latencies.append(time.perf_counter() - data["sent"])
        if len(self.seen) >= self.expected:
            self.complete.set()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if len(latencies) < 2:
        return {}
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50": round(cuts[49] * 1000, 3),
        "p99": round(cuts[98] * 1000, 3),
        "max": round(max(latencies) * 1000, 3),
    }


async def _open_all(urls: Sequence[str], clients: list[_LoadClient], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def open_one(client: _LoadClient) -> None:
        async with gate:
            await client.open(urls[client.index % len(urls)])

    await asyncio.gather(*(open_one(client) for client in clients))


async def _close_all(clients: list[_LoadClient]) -> None:
    await asyncio.gather(*(client.ws.close() for client in clients if client.ws is not None))


async def run_load(
    urls: Sequence[str],
    plan: LoadPlan,
    on_connected: Callable[[], Awaitable[None]] | None = None,
) -> LoadReport:
    """Run one round of `plan` against the relays at `urls`; every connection is closed after.

    `on_connected` runs once every client is connected and subscribed, before anyone
    publishes (e.g. to read the relays' memory then).
    """
    per_topic = [len(range(t, plan.clients, plan.topics)) for t in range(plan.topics)]
    clients = [
        _LoadClient(
            i, f"load-{i % plan.topics}", per_topic[i % plan.topics] * plan.messages_per_client
        )
        for i in range(plan.clients)
    ]
    started = time.perf_counter()
    readers: list[asyncio.Task[None]] = []
    try:
        await _open_all(urls, clients, plan.connect_concurrency)
        if on_connected is not None:
            await on_connected()
        connected = time.perf_counter()
        readers = [asyncio.create_task(client.read_all()) for client in clients]
        await asyncio.gather(
            *(
                client.publish_all(
                    plan.messages_per_client,
                    plan.payload_bytes,
                    plan.send_interval,
                    # Spread over the interval: clients publishing in lockstep would measure
                    # the queue of one burst, not the relay's delivery latency.
                    plan.send_interval * client.index / plan.clients,
                )
                for client in clients
            )
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(client.complete.wait() for client in clients)), plan.deadline
            )
        finished = time.perf_counter()
    finally:
        await _close_all(clients)
        await asyncio.gather(*readers, return_exceptions=True)
    expected = sum(client.expected for client in clients)
    delivered = sum(len(client.seen) for client in clients)
    run_seconds = finished - connected
    return LoadReport(
        clients=plan.clients,
        topics=plan.topics,
        published=plan.clients * plan.messages_per_client,
        expected_deliveries=expected,
        delivered=delivered,
        lost=expected - delivered,
        duplicated=sum(client.duplicated for client in clients),
        connect_seconds=round(connected - started, 3),
        run_seconds=round(run_seconds, 3),
        deliveries_per_second=round(delivered / run_seconds, 1),
        latency_ms=_percentiles([lat for client in clients for lat in client.latencies]),
    )
