"""Soak mDNS discovery of TXT updates and of invitations: how often a browser or a joiner
misses them, with CPU burners beside.

    .venv/bin/python scripts/soak_mdns.py [--scenario update|revert|ask|join] [--runs 50]
        [--burners 4] [--wait 15] [--out F.json]

``update`` and ``revert``: each run builds a two-node NetnsLab (namespaces only this script
creates), starts ``tests/test_mdns.py``'s browse agent on one node and its announce agent
on the other, waits until the browser reports the service, then has the announcer update
its TXT properties (as a daemon does when an invitation is opened) once (``update``), or
twice, back to the first properties (``revert``: an invitation opened, then closed), and
polls the browser for up to ``--wait`` seconds until it knows the last ones. A run where it
does not is a miss; a capture agent (``tests/mdns_capture.py``) on the browser's node then
shows which TXT records reached it, in order. ``ask``: one update, but the browser also
announces a service of its own (as a daemon does), the lab's bridge stops flooding
multicast to its node first, and each poll asks the LAN (``Browser.ask_now``, as a join
does every 0.25 s): the browser can learn the update only from the unicast answers.

``join``: each run is two daemons in a two-node NetnsLab. A shares a notebook once both
daemons run (B's browser knows A's service; the invitation makes A re-announce its TXT with
the nameplate), then B runs ``p2prtc join --timeout WAIT`` with mDNS as its only way to
find A; a join that fails is a miss.

Beside it, ``--burners`` processes spin the CPU (``while True: pass``) to simulate a loaded
machine. Prints the misses out of the runs and how long seeing the last update (or the
join) took, and saves JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2prtc.adapters.mdns import new_instance_name
from tests.daemons import Node
from tests.mdns_capture import parse_packet, txt_properties
from tests.nbgen import dump, sample_notebook
from tests.netns import Agent, NetnsLab

REPO_ROOT = Path(__file__).resolve().parents[1]
AGENT = str(REPO_ROOT / "tests" / "test_mdns.py")
CAPTURE = str(REPO_ROOT / "tests" / "mdns_capture.py")
PORT = 4242
FIRST = {"v": "1", "n": "7"}
UPDATED = {"v": "1", "n": "7,12"}
# The updates each scenario makes after the first announcement was seen.
UPDATES = {"update": [UPDATED], "revert": [UPDATED, FIRST], "ask": [UPDATED]}


@contextlib.contextmanager
def burners(count: int) -> Iterator[None]:
    """`count` processes spinning the CPU until the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _next(agent: Agent, event: str, name: str, deadline: float) -> dict[str, Any] | None:
    """The agent's next `event` about `name` before `deadline` (monotonic), or None."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = agent._lines.get(timeout=left)  # a bounded wait, no pytest.fail
        except queue.Empty:
            return None
        if line is None:
            return None
        message: dict[str, Any] = json.loads(line)
        if message["event"] == event and message.get("name") == name:
            return message
    return None


def _txt_seen(capture: Agent, name: str) -> list[dict[str, str]]:
    """The TXT properties of `name` in every packet the capture agent received, in order."""
    seen = []
    while True:
        try:
            line = capture._lines.get_nowait()
        except queue.Empty:
            return seen
        if line is None:
            return seen
        message = json.loads(line)
        if message["event"] != "packet":
            continue
        for record in parse_packet(bytes.fromhex(message["hex"])):
            if record.type == "DNSText" and record.name == name:
                seen.append(txt_properties(record.text))


def one_run(wait_s: float, updates: list[dict[str, str]], ask: bool) -> dict[str, Any]:
    """One announce -> updates -> browse sequence; whether the browser ended on the last
    properties, and how long after the first update it knew them. With `ask`, the browser
    announces a service of its own (as a daemon does), the bridge stops flooding multicast
    to it before the updates, and each poll asks the LAN (`Browser.ask_now`)."""
    with NetnsLab(2) as lab:
        announcing, browsing = lab.nodes
        capture = lab.spawn_agent(browsing, [CAPTURE, browsing.address])
        capture.expect(lambda m: m["event"] == "listening")
        own_name = [new_instance_name()] if ask else []
        browser = lab.spawn_agent(browsing, [AGENT, "browse", browsing.address, *own_name])
        browser.expect(lambda m: m["event"] == "browsing")
        name = new_instance_name()
        announcer = lab.spawn_agent(
            announcing,
            [AGENT, "announce", announcing.address, str(PORT), json.dumps(FIRST), name],
        )
        announcer.expect(lambda m: m["event"] == "announced")
        first = _next(browser, "change", name, time.monotonic() + wait_s)
        if first is None or first["properties"] != FIRST:
            return {"outcome": "first-missed", "first": first, "txt": _txt_seen(capture, name)}
        if ask:
            lab.stop_multicast_to(browsing)
        sent = time.monotonic()
        for properties in updates:
            announcer.send({"properties": properties})
            announcer.expect(lambda m: m["event"] == "updated")
        while time.monotonic() < sent + wait_s:
            browser.send({"cmd": "ask" if ask else "known"})
            known = browser.expect(lambda m: m["event"] == "known")["services"].get(name)
            if known == updates[-1]:
                return {"outcome": "seen", "seconds": round(time.monotonic() - sent, 3)}
            time.sleep(0.05)
        return {"outcome": "missed", "known": known, "txt": _txt_seen(capture, name)}


def one_join(wait_s: float) -> dict[str, Any]:
    """A shares, B joins by mDNS only; whether the join succeeded, and how long it took."""
    with NetnsLab(2) as lab, tempfile.TemporaryDirectory() as tmp:
        a, b = (
            Node(
                Path(tmp, f"{n}-home"),
                Path(tmp, n),
                {"P2PRTC_INTERFACES": host.address},
                host.namespace,
            )
            for n, host in zip("ab", lab.nodes, strict=True)
        )
        try:
            for node in (a, b):
                node.workdir.mkdir()
            notebook = a.workdir / "n.ipynb"
            notebook.write_text(dump(sample_notebook()))
            for node in (a, b):  # both daemons run first: B's browser knows A before the invitation
                node.start()
            code = a.share(notebook)
            started = time.monotonic()
            joined = b.run("join", code, "--timeout", f"{wait_s:g}", check=False)
            seconds = round(time.monotonic() - started, 3)
            if joined.returncode == 0:
                return {"outcome": "seen", "seconds": seconds}
            return {"outcome": "missed", "stderr": joined.stderr.strip()[-300:]}
        finally:
            for node in (a, b):
                node.shut_down()


def soak(runs: int, burner_count: int, wait_s: float, scenario: str) -> dict[str, Any]:
    results = []
    started = time.perf_counter()
    with burners(burner_count):
        for index in range(runs):
            if scenario == "join":
                result = one_join(wait_s)
            else:
                result = one_run(wait_s, UPDATES[scenario], ask=scenario == "ask")
            results.append(result)
            if result["outcome"] != "seen":
                print(f"run {index}: {json.dumps(result)}", flush=True)
    seconds = [r["seconds"] for r in results if r["outcome"] == "seen"]
    return {
        "scenario": scenario,
        "runs": runs,
        "burners": burner_count,
        "wait_s": wait_s,
        "missed": sum(r["outcome"] != "seen" for r in results),
        "seen_s_median": round(statistics.median(seconds), 3) if seconds else None,
        "seen_s_max": max(seconds, default=None),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "misses": [r for r in results if r["outcome"] != "seen"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--burners", type=int, default=4)
    parser.add_argument("--wait", type=float, default=15.0)
    parser.add_argument("--scenario", choices=[*UPDATES, "join"], default="update")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    try:
        result = soak(args.runs, args.burners, args.wait, args.scenario)
    except pytest.skip.Exception as exc:  # NetnsLab: not root, no `ip`
        sys.exit(f"cannot build namespaces: {exc}")
    print(
        f"{result['scenario']}: {result['missed']} of {result['runs']} runs missed"
        f" (waited {result['wait_s']:g} s, {result['burners']} CPU burners);"
        f" seen after median {result['seen_s_median']} s, max {result['seen_s_max']} s,"
        f" in {result['elapsed_s']} s"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
