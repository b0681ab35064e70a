"""Benchmark joining through a signaling relay against joining on the "LAN".

    .venv/bin/python scripts/bench_join.py [--runs 10] [--out bench-results/bench_join.json]

Two sharer daemons (one per way of meeting) share 02.02 and keep running. Each run makes a
new invitation (``p2prtc invite PATH --json``) and a joiner with a fresh home runs
``p2prtc join CODE DEST``: "cold", the command starts the joiner's daemon (a machine that
never ran p2prtc); "warm", the joiner's daemon was started before (``p2prtc daemon``), so
only the meeting, the handshakes, WebRTC and the sync are timed. Measured: from starting
``p2prtc join`` to the notebook's bytes on the joiner's disk, and to the command's return.
The ways and starts alternate, run by run, so that all see the same load on the machine.

- ``signaling``: mDNS off and no peer address; the daemons meet only through a real relay
  process (``python -m signaling``) on 127.0.0.1; WebRTC then connects on 127.0.0.1.
- ``lan``: the LAN on one machine without root-namespace mDNS: the joiner dials the
  sharer's rendezvous port directly (``P2PRTC_PEERS``), mDNS off.

Prints a table (median and p90) and saves JSON. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.daemons import Node, copy_notebook
from tests.signaling_server import running_signaling_server

REPO_ROOT = Path(__file__).resolve().parents[1]

NOTEBOOK = REPO_ROOT.parent / "shared" / "notebooks" / "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
RESULTS = REPO_ROOT / "bench-results" / "bench_join.json"
LOOPBACK = {"P2PRTC_INTERFACES": "127.0.0.1", "P2PRTC_MDNS": "0"}
JOIN_TIMEOUT_S = 30.0
POLL_S = 0.001
# "cold": `p2prtc join` starts the joiner's daemon; "warm": it already runs (fresh home).
STARTS = ("cold", "warm")


class BenchFailed(Exception):
    """A step did not complete within its bound."""


@dataclass
class Samples:
    on_disk_ms: list[float] = field(default_factory=list)
    cli_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Way:
    """One way of meeting: a running sharer, and the environment its joiners get."""

    name: str
    sharer: Node
    notebook: Path
    joiner_env: dict[str, str]
    samples: dict[str, Samples] = field(
        default_factory=lambda: {start: Samples() for start in STARTS}
    )


def start_sharer(root: Path, name: str, env: dict[str, str]) -> tuple[Node, Path]:
    workdir = root / name / "sharer"
    workdir.mkdir(parents=True)
    sharer = Node(root / name / "sharer-home", workdir, env)
    notebook = copy_notebook(NOTEBOOK, workdir / NOTEBOOK.name)
    sharer.share(notebook)  # starts the daemon; the first code is simply not used
    return sharer, notebook


def signaling_way(root: Path, relay_url: str) -> Way:
    env = {**LOOPBACK, "P2PRTC_SIGNAL": relay_url}
    sharer, notebook = start_sharer(root, "signaling", env)
    return Way("signaling", sharer, notebook, dict(env))


def lan_way(root: Path) -> Way:
    sharer, notebook = start_sharer(root, "lan", dict(LOOPBACK))
    port = sharer.status()["daemon"]["rendezvous_port"]
    return Way("lan", sharer, notebook, {**LOOPBACK, "P2PRTC_PEERS": f"127.0.0.1:{port}"})


def holds(path: Path, expected: bytes) -> bool:
    try:
        return path.stat().st_size == len(expected) and path.read_bytes() == expected
    except FileNotFoundError:
        return False


def timed_join(joiner: Node, code: str, dest: Path, expected: bytes) -> tuple[float, float]:
    """(ms until ``dest`` holds ``expected``, ms until ``p2prtc join`` returned)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        joiner.command("join", code, str(dest), "--timeout", str(JOIN_TIMEOUT_S)),
        cwd=joiner.workdir,
        env=joiner.full_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        on_disk = wait_for_bytes(dest, expected, process, started + JOIN_TIMEOUT_S + 10)
        _, stderr = process.communicate(timeout=JOIN_TIMEOUT_S + 10)
    except BenchFailed:
        process.kill()
        _, stderr = process.communicate()
        raise BenchFailed(f"join exited {process.returncode}: {stderr.strip()}") from None
    returned = time.perf_counter()
    if process.returncode != 0:
        raise BenchFailed(f"join exited {process.returncode}: {stderr.strip()}")
    return (on_disk - started) * 1000, (returned - started) * 1000


def wait_for_bytes(
    path: Path, expected: bytes, process: subprocess.Popen[str], deadline: float
) -> float:
    """The perf_counter time at which ``path`` first held ``expected``.

    Gives up at ``deadline``, or when ``process`` (the join) has exited without them.
    """
    while time.perf_counter() < deadline:
        exited = process.poll() is not None
        if holds(path, expected):
            return time.perf_counter()
        if exited:
            break
        time.sleep(POLL_S)
    raise BenchFailed(f"{path.name} never arrived")


def run_once(way: Way, root: Path, start: str, index: int) -> None:
    """One join with a fresh joiner home; records the times or the failure."""
    workdir = root / way.name / f"joiner-{start}-{index}"
    workdir.mkdir()
    joiner = Node(workdir.with_name(f"{workdir.name}-home"), workdir, dict(way.joiner_env))
    samples = way.samples[start]
    try:
        if start == "warm":
            joiner.start()
        code = str(way.sharer.json("invite", str(way.notebook))["code"])
        on_disk, returned = timed_join(
            joiner, code, workdir / "joined.ipynb", way.notebook.read_bytes()
        )
        samples.on_disk_ms.append(on_disk)
        samples.cli_ms.append(returned)
    except BenchFailed as exc:
        samples.failures.append(str(exc))
        print(f"  {way.name} {start} run {index}: {exc}", file=sys.stderr)
        print(f"  joiner's daemon log:\n{joiner.log_tail()}", file=sys.stderr)
    finally:
        joiner.shut_down()


def summary(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0}
    cuts = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else []
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(cuts[-1] if cuts else samples[0], 1),
        "min_ms": round(min(samples), 1),
        "max_ms": round(max(samples), 1),
        "samples_ms": [round(value, 1) for value in samples],
    }


def report(samples: Samples) -> dict[str, Any]:
    return {
        "on_disk": summary(samples.on_disk_ms),
        "cli_return": summary(samples.cli_ms),
        "failures": samples.failures,
    }


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(f"\njoin of {NOTEBOOK.name}, ms from `p2prtc join` started")
    print(f"{'way':<10} {'daemon':<6} {'n':>3} {'fail':>4} {'disk p50':>9} {'disk p90':>9}")
    for name, by_start in results.items():
        for start, result in by_start.items():
            disk = result["on_disk"]
            print(
                f"{name:<10} {start:<6} {disk['n']:>3} {len(result['failures']):>4}"
                f" {disk.get('median_ms', '-'):>9} {disk.get('p90_ms', '-'):>9}"
            )


@contextlib.contextmanager
def sharers(root: Path, relay_url: str) -> Iterator[list[Way]]:
    ways: list[Way] = []
    try:
        ways.append(signaling_way(root, relay_url))
        ways.append(lan_way(root))
        yield ways
    finally:
        for way in ways:
            way.sharer.shut_down()


def bench(runs: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="bench-join-") as tmp,
        running_signaling_server() as relay,
        sharers(Path(tmp), relay.url) as ways,
    ):
        for index in range(runs):
            for start in STARTS:
                for way in ways:
                    run_once(way, Path(tmp), start, index)
            print(f"  run {index + 1}/{runs} done", file=sys.stderr)
        results = {
            way.name: {start: report(samples) for start, samples in way.samples.items()}
            for way in ways
        }
    return {
        "notebook": NOTEBOOK.name,
        "notebook_bytes": NOTEBOOK.stat().st_size,
        "runs": runs,
        "measured": "p2prtc join started -> notebook bytes on the joiner's disk (on_disk), "
        "and -> the command returned (cli_return); fresh joiner home each run; cold: join "
        "starts the joiner's daemon, warm: the daemon was started before",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
        "ways": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="joins per way (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file ({RESULTS})")
    args = parser.parse_args()
    results = bench(args.runs)
    print_table(results["ways"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
