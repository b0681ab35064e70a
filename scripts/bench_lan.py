"""Benchmark the LAN path as a user meets it: network namespaces, mDNS, the CLI alone.

    .venv/bin/python scripts/bench_lan.py [--runs 5] [--big-runs 3] [--big-only | --warm-only]
        [--out PATH.json]

Needs root (it creates its own namespaces, tests/netns.py). A sharer daemon in one namespace
shares 02.02 (33 KB) and keeps running; each run makes a new invitation (``p2prtc invite``)
and a joiner in the other namespace, with a fresh home, runs ``p2prtc join CODE DEST``.
Both find each other by mDNS only (no peer address, no relay). Timed from starting the
command to its return:

- ``join cold``: the command starts the joiner's daemon (a machine that never ran p2prtc);
- ``join warm``: the joiner's daemon was started before (``p2prtc daemon``) and has run
  for a second;
- ``wrong code``: the right nameplate with other words, warm and cold joiner;
- ``unknown word``: a code with a word not in the list, no daemon running: it must be
  refused without starting one (checked: no daemon process of that home appears);
- ``idle RSS``: the joiner's daemon after a warm join, its share open and its peer linked,
  once it has been idle for IDLE_S; then again after it joined 05.11 (1.7 MB) too;
- ``join 50 MB``: a warm join of a generated 50 MB notebook (100 cells, each showing a
  noise PNG: nothing compresses it), and its effective rate (file size / join time); one
  per round for the first ``--big-runs`` rounds.

``--warm-only`` runs only the warm 33 KB joins (and the joiner's CPU over them), without
the idle RSS, for quick before/after pairs. The p2prtc package the commands run is compiled
to bytecode first, as an installed package is (pip compiles it): an environment with
PYTHONDONTWRITEBYTECODE would otherwise have every command compile p2prtc's sources anew,
about 20 ms of a command's start.

Kinds alternate run by run so that all see the same load. Prints the issue's table (median
of the runs, target, pass/fail) and saves JSON with every sample and the load average.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import p2prtc
from p2prtc import control
from p2prtc.core.wordlist import WORDS
from scripts.bench_engine import save_results
from tests.daemons import (
    Node,
    copy_notebook,
    cpu_seconds,
    edit_cell,
    linked_peers,
    memory_mib,
    mesh_is_connected,
    netns_nodes,
    wait_until,
)
from tests.nbgen import big_outputs_notebook, dump

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT.parent / "shared" / "notebooks"
NOTEBOOK = NOTEBOOKS / "02.02-The-Basics-Of-NumPy-Arrays.ipynb"
MEDIUM_NOTEBOOK = NOTEBOOKS / "05.11-K-Means.ipynb"
BIG_NOTEBOOK_MB = 50
RESULTS = REPO_ROOT / "bench-results" / "bench_lan.json"
COMMAND_TIMEOUT_S = 60.0
# "Warm": the joiner's daemon has been running for this long (its mDNS browser has seen
# the LAN, its background work is done), as for a user who ran `p2prtc start` earlier.
WARM_RUNNING_S = 1.0
# "Idle": how long a daemon has done nothing when its RSS is read (its memory housekeeping
# checks every 2 s, daemon/memory.py).
IDLE_S = 6.0
# The N-daemon row: joins running at once (each a PAKE the sharer judges in turn), and the
# cell the editor's save changes.
SCALE_JOINS = 4
SCALE_EDITED_CELL = 3
SCALE_MESH_TIMEOUT_S = 600.0


class BenchFailed(Exception):
    """A step did not give the expected result."""


@dataclass(frozen=True)
class Figure:
    """One row of the issue's table: what is measured and its bound."""

    name: str
    unit: str
    target: float | None  # None: a figure to explain the others, no bound
    at_least: bool = False  # the target is a minimum (a rate), not a maximum


FIGURES = (
    Figure("join cold (joiner's daemon not running), 33 KB, mDNS", "s", 1.0),
    Figure("join warm (joiner's daemon running), mDNS", "s", 0.2),
    Figure("wrong code, warm joiner", "s", 0.5),
    Figure("wrong code, cold joiner", "s", 0.5),
    Figure("code with a word not in the list, no daemon running", "s", 0.2),
    Figure("idle daemon RSS, one 33 KB share (joiner after a warm join)", "MiB", 60.0),
    Figure("idle daemon RSS, with the 1.7 MB one too", "MiB", 60.0),
    Figure(f"join warm, {BIG_NOTEBOOK_MB} MB notebook (big outputs), mDNS", "s", 3.0),
    Figure(f"join warm, {BIG_NOTEBOOK_MB} MB notebook: effective rate", "MB/s", 15.0, True),
    # CPU is what a warm join waits for, and unlike the times it does not grow with the
    # machine's load: the joiner's daemon's user + system time over the join.
    Figure("join warm: CPU of the joiner's daemon over the join", "s", None),
)


@dataclass
class Lab:
    """The running sharer and what each run needs to make a fresh joiner."""

    root: Path
    sharer: Node
    notebook: Path
    medium: Path
    big: Path | None
    joiner_template: Node
    samples: dict[str, list[float]] = field(default_factory=lambda: {f.name: [] for f in FIGURES})
    runs: int = 0

    def fresh_joiner(self, label: str) -> Node:
        self.runs += 1
        base = self.root / f"{label}-{self.runs}"
        (base / "work").mkdir(parents=True)
        template = self.joiner_template
        return Node(base / "home", base / "work", dict(template.env), template.namespace)

    def invitation(self, notebook: Path | None = None) -> str:
        answer = self.sharer.json("invite", str(notebook or self.notebook))
        return str(answer["code"])


def timed(node: Node, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Seconds from starting ``p2prtc ARGS`` on ``node`` to its exit, and its result."""
    start = time.perf_counter()
    result = node.run(*args, check=False, timeout=COMMAND_TIMEOUT_S)
    return time.perf_counter() - start, result


def expect(result: subprocess.CompletedProcess[str], ok: bool, what: str) -> None:
    if (result.returncode == 0) != ok:
        raise BenchFailed(f"{what}: exit {result.returncode}: {result.stderr.strip()}")


@contextlib.contextmanager
def joiner(lab: Lab, label: str, *, warm: bool) -> Iterator[Node]:
    node = lab.fresh_joiner(label)
    try:
        if warm:
            node.start()
            time.sleep(WARM_RUNNING_S)
        yield node
    finally:
        node.shut_down()


def wrong(code: str) -> str:
    """The same nameplate with other words of the list: a mistyped secret."""
    nameplate, *words = code.split("-")
    others = [word for word in WORDS if word not in words]
    return "-".join((nameplate, *others[: len(words)]))


def run_join(lab: Lab, *, warm: bool, with_rss: bool = True) -> None:
    code = lab.invitation()
    with joiner(lab, "warm" if warm else "cold", warm=warm) as node:
        cpu_before = cpu_seconds(node.pid()) if warm else 0.0
        seconds, result = timed(node, "join", code, "nb.ipynb")
        if warm:
            lab.samples[FIGURES[9].name].append(cpu_seconds(node.pid()) - cpu_before)
        expect(result, True, "join")
        if (node.workdir / "nb.ipynb").read_bytes() != lab.notebook.read_bytes():
            raise BenchFailed("the joined notebook differs from the shared one")
        lab.samples[FIGURES[1 if warm else 0].name].append(seconds)
        if warm and with_rss:
            lab.samples[FIGURES[5].name].append(idle_rss(node, node.workdir / "nb.ipynb"))
            _, result = timed(node, "join", lab.invitation(lab.medium), "medium.ipynb")
            expect(result, True, "join of 05.11")
            lab.samples[FIGURES[6].name].append(idle_rss(node, node.workdir / "medium.ipynb"))


def idle_rss(node: Node, joined: Path) -> float:
    """The daemon's RSS in MiB once ``joined`` is linked and the daemon was idle IDLE_S."""
    wait_until(lambda: node.peers_synced(joined, 1), what="linked")
    time.sleep(IDLE_S)
    return float(memory_mib(node.pid())["VmRSS"])


def run_big_join(lab: Lab) -> None:
    assert lab.big is not None
    code = lab.invitation(lab.big)
    with joiner(lab, "big", warm=True) as node:
        seconds, result = timed(node, "join", code, "big.ipynb")
        expect(result, True, "join of the big notebook")
        if (node.workdir / "big.ipynb").read_bytes() != lab.big.read_bytes():
            raise BenchFailed("the joined big notebook differs from the shared one")
        lab.samples[FIGURES[7].name].append(seconds)
        lab.samples[FIGURES[8].name].append(lab.big.stat().st_size / 1e6 / seconds)


def run_wrong_code(lab: Lab, *, warm: bool) -> None:
    code = wrong(lab.invitation())
    with joiner(lab, "wrong", warm=warm) as node:
        seconds, result = timed(node, "join", code, "nb.ipynb")
        expect(result, False, "a wrong code")
        lab.samples[FIGURES[2 if warm else 3].name].append(seconds)


def run_unknown_word(lab: Lab) -> None:
    node = lab.fresh_joiner("unknown")
    seconds, result = timed(node, "join", "1-notaword-zebra", "nb.ipynb")
    expect(result, False, "a code with an unknown word")
    if node.daemon_pids() or (node.home / "daemon.log").exists():
        raise BenchFailed("a daemon was started for a code that could not be valid")
    lab.samples[FIGURES[4].name].append(seconds)


def one_round(
    lab: Lab, big: bool, *, big_only: bool = False, warm_only: bool = False
) -> list[Callable[[], None]]:
    if warm_only:
        return [lambda: run_join(lab, warm=True, with_rss=False)]
    small: list[Callable[[], None]] = [
        lambda: run_join(lab, warm=False),
        lambda: run_join(lab, warm=True),
        lambda: run_wrong_code(lab, warm=True),
        lambda: run_wrong_code(lab, warm=False),
        lambda: run_unknown_word(lab),
    ]
    return [*([] if big_only else small), *([lambda: run_big_join(lab)] if big else [])]


def summary(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for figure in FIGURES:
        values = samples[figure.name]
        median = statistics.median(values) if values else None
        rows.append(
            {
                "figure": figure.name,
                "unit": figure.unit,
                "median": median,
                "min": min(values, default=None),
                "max": max(values, default=None),
                "target": figure.target,
                "at_least": figure.at_least,
                "pass": passes(figure, median),
                "samples": values,
            }
        )
    return rows


def passes(figure: Figure, median: float | None) -> bool | None:
    """Whether the figure meets its target; None without a target or a sample (not run)."""
    if figure.target is None or median is None:
        return None
    return median >= figure.target if figure.at_least else median <= figure.target


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | median | min - max | target | pass |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        unit = row["unit"]
        bound = "-"
        if row["target"] is not None:
            bound = f"{'>=' if row['at_least'] else '<='} {row['target']:g} {unit}"
        verdict = {None: "-", True: "yes", False: "NO"}[row["pass"]]
        if row["median"] is None:
            lines.append(f"| {row['figure']} | - | - | {bound} | {verdict} |")
            continue
        lines.append(
            f"| {row['figure']} | {row['median']:.2f} {unit} | {row['min']:.2f} - "
            f"{row['max']:.2f} | {bound} | {verdict} |"
        )
    return "\n".join(lines)


def bench(
    runs: int, big_runs: int, *, big_only: bool = False, warm_only: bool = False
) -> dict[str, Any]:
    compileall.compile_dir(Path(p2prtc.__file__).parent, quiet=1)  # as installed
    load_before = os.getloadavg()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-lan-") as tmp:
        root = Path(tmp)
        with netns_nodes(root, ["sharer", "joiner"]) as (_, (sharer, template)):
            notebook = copy_notebook(NOTEBOOK, sharer.workdir / NOTEBOOK.name)
            medium = copy_notebook(MEDIUM_NOTEBOOK, sharer.workdir / MEDIUM_NOTEBOOK.name)
            big = None
            if big_runs:
                big = sharer.workdir / "big.ipynb"
                big.write_text(dump(big_outputs_notebook(BIG_NOTEBOOK_MB)))
            for path in (notebook, medium, big):
                if path is not None:
                    sharer.share(path)
            lab = Lab(root, sharer, notebook, medium, big, template)
            for index in range(runs):
                steps = one_round(lab, big=index < big_runs, big_only=big_only, warm_only=warm_only)
                for step in steps:
                    try:
                        step()
                    except (BenchFailed, subprocess.TimeoutExpired) as exc:
                        failures.append(str(exc))
            samples = lab.samples
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
        "runs": runs,
        "rows": summary(samples),
        "failures": failures,
    }


def daemon_statuses(nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """Every daemon's status, asked on its control socket from here: spawning the CLI 50
    times a poll would load the machine more than the daemons do."""
    return [control.call(node.home, {"cmd": "status"}) for node in nodes]


def bench_scale(count: int) -> dict[str, Any]:
    """``count`` daemons in ``count`` namespaces on one share: one shares 02.02 with a code
    good for all the others, which join (SCALE_JOINS at a time); once the mesh is connected
    and the daemons idle, one editor's save must reach every other file. Timed from the
    save to the last file holding the edit; RSS of each daemon once idle again."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-lan-scale-") as tmp:
        root = Path(tmp)
        names = [f"m{index}" for index in range(count)]
        with netns_nodes(root, names) as (_, nodes):
            sharer, *joiners = nodes
            files = [node.workdir / "scale.ipynb" for node in nodes]
            copy_notebook(NOTEBOOK, files[0])
            started = time.perf_counter()
            code = sharer.share(files[0], "--uses", str(len(joiners)))
            with ThreadPoolExecutor(SCALE_JOINS) as pool:
                list(pool.map(lambda n, f: n.join(code, f), joiners, files[1:]))
            join_s = time.perf_counter() - started
            wait_for_mesh(nodes)
            time.sleep(IDLE_S)
            line = "# scale: an edit from the last machine"
            reached = reach_times(files, line)
            time.sleep(IDLE_S)
            statuses = daemon_statuses(nodes)
            pids = [status["daemon"]["pid"] for status in statuses]
            rss = sorted(float(memory_mib(pid)["VmRSS"]) for pid in pids)
            pss = sorted(pss_mib(pid) for pid in pids)
            links = sorted(len(linked_peers(status)) for status in statuses)
    return {
        "daemons": count,
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in os.getloadavg()],
        "share_and_joins_s": round(join_s, 1),
        "edit_reached_all_s": max(reached),
        "edit_reached_median_s": statistics.median(reached),
        "rss_mib": {"min": rss[0], "median": statistics.median(rss), "max": rss[-1]},
        # Proportional: the libraries all the daemons map count once, split between them.
        "pss_mib": {"min": pss[0], "median": statistics.median(pss), "max": pss[-1]},
        "connections_per_daemon": links,
    }


def wait_for_mesh(nodes: Sequence[Node]) -> None:
    """Until every daemon reaches every other one; asked every second (50 status requests
    a poll: polling faster would load the machine the daemons need)."""
    deadline = time.monotonic() + SCALE_MESH_TIMEOUT_S
    while not mesh_is_connected(daemon_statuses(nodes)):
        if time.monotonic() > deadline:
            raise BenchFailed(f"no connected mesh after {SCALE_MESH_TIMEOUT_S:g} s")
        time.sleep(1.0)


def pss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise BenchFailed(f"no Pss for {pid}")


def reach_times(files: Sequence[Path], line: str) -> list[float]:
    """Save ``line`` into the last file like an editor; the seconds until each other file
    holds it (polled every millisecond, bytes only: no parse between the reads)."""
    saved = time.perf_counter()
    edit_cell(files[-1], SCALE_EDITED_CELL, line)
    needle = json.dumps(line + "\n").encode()
    arrived: dict[Path, float] = {}
    deadline = saved + 120
    while len(arrived) < len(files) - 1 and time.perf_counter() < deadline:
        for path in files[:-1]:
            if path not in arrived and needle in path.read_bytes():
                arrived[path] = time.perf_counter() - saved
        time.sleep(0.001)
    if len(arrived) < len(files) - 1:
        raise BenchFailed(f"the edit reached {len(arrived)} of {len(files) - 1} daemons")
    return sorted(arrived.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-runs", type=int, default=3, help="50 MB joins (0: none)")
    parser.add_argument(
        "--big-only", action="store_true", help="only the 50 MB joins (--big-runs of them)"
    )
    parser.add_argument(
        "--warm-only", action="store_true", help="only the warm 33 KB joins, no idle RSS"
    )
    parser.add_argument("--scale", type=int, help="only the N-daemon row: N namespaces")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.scale:
        scale = bench_scale(args.scale)
        save_results(args.out.with_name(f"{args.out.stem}_scale{args.scale}.json"), scale)
        print(json.dumps(scale, indent=1))
        return
    runs = args.big_runs if args.big_only else args.runs
    big_runs = 0 if args.warm_only else args.big_runs
    results = bench(runs, big_runs, big_only=args.big_only, warm_only=args.warm_only)
    save_results(args.out, results)
    print(table(results["rows"]))
    machine = results["machine"]
    print(f"load average {machine['load_average_before']} -> {machine['load_average_after']}")
    for failure in results["failures"]:
        print(f"failed: {failure}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
