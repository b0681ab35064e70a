"""Benchmark PeerLink on loopback between two processes, like two daemons on one machine.

    .venv/bin/python scripts/bench_webrtc.py [--mib 32] [--message-kib 64] [--pings 500]

Prints and saves (bench-results/webrtc-<time>.json): time to open (offer created to
channel open, SDP passed through pipes to an already started peer), round-trip time of
a small message (median and p90), and one-way throughput of a bulk transfer. Traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2prtc.adapters.ice import IceConfig
from p2prtc.adapters.webrtc import make_answer, make_offer

REPO_ROOT = Path(__file__).resolve().parents[1]

LOOPBACK = IceConfig(host_addresses=["127.0.0.1"])
OPEN_TIMEOUT = 10.0
DONE = b"done"


async def echo_peer() -> None:
    """The child: answer the offer from stdin, echo pings, acknowledge the bulk transfer."""
    print("ready", flush=True)  # imports done: the parent's open timer may start
    link, answer = await make_answer(LOOPBACK, json.loads(sys.stdin.readline()))
    print(json.dumps(answer), flush=True)
    await link.wait_open(OPEN_TIMEOUT)
    expected = int(await link.recv())
    async for message in link:
        if message.startswith(b"ping"):
            await link.send(message)
            continue
        expected -= len(message)
        if expected == 0:
            await link.send(DONE)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--echo-peer"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, child.stdout.readline) == "ready\n"
    started = time.perf_counter()
    link, offer = await make_offer(LOOPBACK)
    child.stdin.write(json.dumps(offer) + "\n")
    child.stdin.flush()
    answer = json.loads(await loop.run_in_executor(None, child.stdout.readline))
    await link.accept_answer(answer)
    await link.wait_open(OPEN_TIMEOUT)
    open_ms = (time.perf_counter() - started) * 1000

    message = b"x" * (args.message_kib * 1024)
    total = args.mib * 1024 * 1024 // len(message) * len(message)
    await link.send(str(total).encode())
    rtts = []
    for i in range(args.pings):
        sent = time.perf_counter()
        await link.send(b"ping%d" % i)
        await link.recv()
        rtts.append((time.perf_counter() - sent) * 1000)

    started = time.perf_counter()
    for _ in range(total // len(message)):
        await link.send(message)
    assert await link.recv() == DONE
    seconds = time.perf_counter() - started
    await link.close()
    child.wait(OPEN_TIMEOUT)
    return {
        "benchmark": "webrtc-loopback-two-processes",
        "open_ms": round(open_ms, 1),
        "rtt_ms_median": round(statistics.median(rtts), 3),
        "rtt_ms_p90": round(statistics.quantiles(rtts, n=10)[-1], 3),
        "throughput_mb_s": round(total / seconds / 1e6, 2),
        "bulk_bytes": total,
        "message_bytes": len(message),
        "pings": args.pings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="bulk transfer size")
    parser.add_argument("--message-kib", type=int, default=64, help="bulk message size")
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--echo-peer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_peer:
        asyncio.run(echo_peer())
        return
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=2))
    out_dir = REPO_ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"webrtc-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
