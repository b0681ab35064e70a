"""Benchmark the signaling relay on loopback: throughput, latency, loss and memory.

Starts a relay process on 127.0.0.1, runs several rounds of signaling.loadgen against
it, prints the figures and saves them as JSON in bench-results/. The load generator
runs in this one Python process, so at high counts it, not the relay, may be the
bottleneck: compare the relay's CPU time (in the JSON) with the wall time.

    .venv/bin/python scripts/bench_signaling.py --clients 1000 --topics 100 --messages 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from signaling.loadgen import LoadPlan, run_load
from tests.signaling_server import fetch_health, signaling_relay, wait_for_health

ROOT = Path(__file__).resolve().parents[1]


def _relay_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the relay process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _bench(plan: LoadPlan, rounds: int) -> dict[str, Any]:
    async with signaling_relay(max_connections_per_address=plan.clients + 10) as relay:
        baseline = await fetch_health(relay.url)
        results = []
        for number in range(1, rounds + 1):
            cpu_before = _relay_cpu_seconds(relay.process.pid)
            report = await run_load(relay.url, plan)
            cpu = _relay_cpu_seconds(relay.process.pid) - cpu_before
            health = await wait_for_health(relay.url, lambda h: h["connections"] == 0)
            results.append(
                {
                    "round": number,
                    **report.as_dict(),
                    "relay_cpu_seconds": round(cpu, 2),
                    "relay_rss_bytes_after": health["memory_rss_bytes"],
                }
            )
            print(_summary(results[-1]), flush=True)
        final = await fetch_health(relay.url)
    return {
        "plan": plan.__dict__,
        "relay_rss_bytes_baseline": baseline["memory_rss_bytes"],
        "rounds": results,
        "relay_counters": final["counters"],
        "loadgen_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _summary(result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    return (
        f"round {result['round']}: {result['clients']} clients, {result['topics']} topics, "
        f"{result['delivered']}/{result['expected_deliveries']} delivered "
        f"(lost {result['lost']}, duplicated {result['duplicated']}), "
        f"{result['deliveries_per_second']:.0f} deliveries/s, "
        f"latency p50 {latency.get('p50')} ms p99 {latency.get('p99')} ms, "
        f"relay CPU {result['relay_cpu_seconds']} s, "
        f"relay RSS {result['relay_rss_bytes_after'] / 2**20:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--messages", type=int, default=20, help="publishes per client")
    parser.add_argument("--payload", type=int, default=500, help="padding bytes per message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plan = LoadPlan(
        clients=args.clients,
        topics=args.topics,
        messages_per_client=args.messages,
        payload_bytes=args.payload,
        deadline=60.0,
    )
    results = asyncio.run(_bench(plan, args.rounds))
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"signaling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
