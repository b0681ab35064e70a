"""Benchmark the signaling relay on loopback: one process, and a cluster of relays on Redis.

Runs the same signaling.loadgen rounds against a single relay process and against
`--relays` relay processes sharing one redis-server (clients spread over them), prints
the figures (deliveries lost or duplicated, p50/p99 latency, relay CPU, memory per
connection) and saves them as JSON in bench-results/. The load generator runs in this
one Python process, so at high counts it, not the relays, may be the bottleneck:
compare the relays' CPU time with the wall time.

    .venv/bin/python scripts/bench_signaling.py --clients 3000 --topics 300 --messages 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from signaling.loadgen import LoadPlan, run_load
from tests.redis_server import RedisServer, relay_cluster
from tests.signaling_server import (
    SignalingServerProcess,
    fetch_health,
    signaling_relay,
    wait_for_health,
)

ROOT = Path(__file__).resolve().parents[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rss(relays: list[SignalingServerProcess]) -> int:
    return sum([(await fetch_health(relay.url))["memory_rss_bytes"] for relay in relays])


async def _round(
    relays: list[SignalingServerProcess], plan: LoadPlan, baseline: int
) -> dict[str, Any]:
    pids = [relay.process.pid for relay in relays]
    connected: dict[str, float] = {}

    async def measure() -> None:
        connected["rss"] = await _rss(relays)
        connected["cpu"] = sum(map(_cpu_seconds, pids))

    cpu_before = sum(map(_cpu_seconds, pids))
    report = await run_load([relay.url for relay in relays], plan, measure)
    cpu_after = sum(map(_cpu_seconds, pids))
    for relay in relays:
        await wait_for_health(relay.url, lambda h: h["connections"] == 0)
    return {
        **report.as_dict(),
        "relays_cpu_seconds": round(cpu_after - cpu_before, 2),
        "relays_cpu_seconds_publishing": round(cpu_after - connected["cpu"], 2),
        "relay_cpu_us_per_delivery": round(
            (cpu_after - connected["cpu"]) * 1e6 / max(1, report.delivered), 1
        ),
        "relays_rss_bytes_connected": connected["rss"],
        "memory_per_connection_bytes": int(connected["rss"] - baseline) // plan.clients,
        "relays_rss_bytes_after": await _rss(relays),
    }


async def _bench(
    name: str, relays: list[SignalingServerProcess], plan: LoadPlan, rounds: int
) -> dict[str, Any]:
    baseline = await _rss(relays)
    results = []
    for number in range(1, rounds + 1):
        results.append({"round": number, **await _round(relays, plan, baseline)})
        print(_summary(name, results[-1]), flush=True)
    return {
        "relays": len(relays),
        "relays_rss_bytes_baseline": baseline,
        "rounds": results,
        "relay_counters": [(await fetch_health(relay.url))["counters"] for relay in relays],
    }


@contextlib.asynccontextmanager
async def _cluster(
    count: int, limits: dict[str, float]
) -> AsyncIterator[tuple[list[SignalingServerProcess], RedisServer]]:
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        redis = RedisServer.start(Path(workdir))
        try:
            async with relay_cluster(redis.url, count, **limits) as relays:
                yield relays, redis
        finally:
            redis.stop()


async def _compare(plan: LoadPlan, rounds: int, relay_count: int) -> dict[str, Any]:
    limits: dict[str, float] = {"max_connections_per_address": plan.clients + 10}
    async with signaling_relay(**limits) as relay:
        single = await _bench("1 relay", [relay], plan, rounds)
    async with _cluster(relay_count, limits) as (relays, redis):
        redis_cpu = _cpu_seconds(redis.process.pid)
        cluster = await _bench(f"{relay_count} relays + redis", relays, plan, rounds)
        cluster["redis_cpu_seconds"] = round(_cpu_seconds(redis.process.pid) - redis_cpu, 2)
    return {
        "plan": plan.__dict__,
        "single": single,
        "cluster": cluster,
        "loadgen_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _summary(name: str, result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    return (
        f"{name}, round {result['round']}: {result['clients']} clients, "
        f"{result['topics']} topics, {result['delivered']}/{result['expected_deliveries']} "
        f"delivered (lost {result['lost']}, duplicated {result['duplicated']}), "
        f"{result['deliveries_per_second']:.0f} deliveries/s, "
        f"latency p50 {latency.get('p50')} ms p99 {latency.get('p99')} ms, "
        f"relays CPU {result['relays_cpu_seconds']} s "
        f"({result['relay_cpu_us_per_delivery']} µs per delivery), "
        f"{result['memory_per_connection_bytes'] / 1024:.1f} KiB per connection"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--topics", type=int, default=300)
    parser.add_argument("--relays", type=int, default=3, help="relays in the cluster")
    parser.add_argument("--messages", type=int, default=5, help="publishes per client")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a client's publishes"
    )
    parser.add_argument("--payload", type=int, default=500, help="padding bytes per message")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    plan = LoadPlan(
        clients=args.clients,
        topics=args.topics,
        messages_per_client=args.messages,
        payload_bytes=args.payload,
        send_interval=args.interval,
        deadline=60.0,
    )
    results = asyncio.run(_compare(plan, args.rounds, args.relays))
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"signaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
