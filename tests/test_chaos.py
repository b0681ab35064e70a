"""Chaos (issue 6): four machines edit one notebook while daemons die and links break.

Four real daemons, each in its own network namespace on the test's bridge, mDNS on and
confined to the machine's address (tests/netns.py, tests/daemons.py). Machine 0 shares a
generated 12-cell notebook (nbformat 4.5, cell ids) with a code good for three joins; the
three others join at once. Then a seeded random schedule runs for DURATION_S:

- editor saves, the bulk of it: each writes one new line (a unique token) into a random cell
  at a random line, saved like Jupyter (temp file + rename). Most saves read the file first
  (read-modify-write); a STALE one writes the buffer the machine's editor last read or saved,
  without reloading, so it lacks what peers wrote since: it must not erase their lines (how
  stale is bounded: see Editor). Editors keep saving into the file of a machine whose daemon
  is down: the restarted daemon must ingest those saves.
- kill -9 of a random daemon (any of them, the sharer included), restarted a few seconds later.
- a cut link: the machine's veth set down, inside the machine or on the bridge's end, and
  set up again a few seconds later. Cuts and kills overlap freely (partitions happen).

Cells are never deleted or moved: a move is a delete plus an insert in the engine and may
lose a concurrent edit inside the moved cell (a documented limitation), and without
deletions every token must survive, which makes the check exact.

Meanwhile a poller reads every machine's file every POLL_PERIOD_S: every read must be a valid
notebook. At the end every link is healed and every dead daemon restarted, then (bounded by
CONVERGE_TIMEOUT_S) all four files must become byte-identical; every token must be in them
exactly once, in the cell it was typed into, and taking the tokens out must give back the
original notebook (nothing lost, doubled or mangled around them).

The tests at the end reproduce, on two loopback daemons, what the chaos runs found: stale
saves across a restart, stale saves older than the engine's versions, and saves that land
while the daemon writes the file.

The run prints its seed and every action with the time it ran; P2PRTC_CHAOS_SEED=<seed>
replays the same schedule (the daemons' timing, of course, differs from run to run).
"""

from __future__ import annotations

import enum
import functools
import math
import os
import random
import re
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest
from daemons import (
    FilePoller,
    Node,
    Pair,
    kill_9,
    netns_nodes,
    synced_pair,
    wait_until,
    write_like_jupyter,
)
from nbgen import Notebook, generated_notebook, parse, split_lines
from netns import NetnsLab

from p2prtc.core.engine import MAX_VERSIONS

MACHINES = 4
CELLS = 12
DURATION_S = 45.0
SAVES = 50
STALE_SHARE = 0.3
KILLS = 5
CUTS = 6
OUTAGE_S = (2.0, 6.0)
# One machine's outages of one kind are at least this far apart, so a restarted daemon is
# up (it re-imports aiortc: seconds on a loaded machine) before it can be killed again.
OUTAGE_GAP_S = 4.0
JOIN_TIMEOUT_S = 40.0
CONVERGE_TIMEOUT_S = 60.0
# Equal files that stay unchanged this long are final, even without every token.
QUIET_S = 5.0
POLL_PERIOD_S = 0.02
TOKEN = re.compile(r"# chaos-\d{3}-[0-9a-f]{6} \(m\d\)")
SEED_VARIABLE = "P2PRTC_CHAOS_SEED"


class Kind(enum.Enum):
    SAVE = "save"
    KILL = "kill"
    RESTART = "restart"
    CUT = "cut"
    HEAL = "heal"


@dataclass(frozen=True)
class Action:
    at: float  # seconds after the schedule starts
    kind: Kind
    machine: int
    cell: int = 0
    where: float = 0.0  # where the new line goes among the cell's lines (0 first, 1 last)
    stale: bool = False
    token: str = ""
    hub_side: bool = False  # cut the bridge's end of the link rather than the machine's

    def describe(self) -> str:
        if self.kind is Kind.SAVE:
            mode = "stale" if self.stale else "fresh"
            return f"save m{self.machine} cell {self.cell} {mode} {self.token!r}"
        side = " (hub side)" if self.kind in (Kind.CUT, Kind.HEAL) and self.hub_side else ""
        return f"{self.kind.value} m{self.machine}{side}"


def make_schedule(rng: random.Random) -> list[Action]:
    saves = [save_action(rng, index) for index in range(SAVES)]
    kills = outages(rng, KILLS, Kind.KILL, Kind.RESTART)
    cuts = outages(rng, CUTS, Kind.CUT, Kind.HEAL)
    return sorted([*saves, *kills, *cuts], key=lambda action: action.at)


def save_action(rng: random.Random, index: int) -> Action:
    machine = rng.randrange(MACHINES)
    return Action(
        at=rng.uniform(0, DURATION_S),
        kind=Kind.SAVE,
        machine=machine,
        cell=rng.randrange(CELLS),
        where=rng.random(),
        stale=rng.random() < STALE_SHARE,
        token=f"# chaos-{index:03d}-{rng.getrandbits(24):06x} (m{machine})",
    )


def outages(rng: random.Random, count: int, down: Kind, up: Kind) -> list[Action]:
    """``count`` outages (``down``, then ``up`` OUTAGE_S later) of random machines; one
    machine's outages never overlap. The first is still on when the schedule ends (no
    ``up``): the end of the test repairs it, as the last thing before convergence."""
    last = (rng.randrange(MACHINES), rng.uniform(DURATION_S - 4, DURATION_S - 1), math.inf)
    taken = [last]
    for _ in range(100 * count):  # random tries, bounded; a few suffice
        if len(taken) == count:
            break
        machine = rng.randrange(MACHINES)
        start = rng.uniform(0, DURATION_S - OUTAGE_S[1])
        end = start + rng.uniform(*OUTAGE_S)
        if all(
            other != machine or end + OUTAGE_GAP_S < begin or finish + OUTAGE_GAP_S < start
            for other, begin, finish in taken
        ):
            taken.append((machine, start, end))
    actions = []
    for machine, start, end in taken:
        hub_side = rng.random() < 0.5
        actions.append(Action(start, down, machine, hub_side=hub_side))
        if end < math.inf:
            actions.append(Action(end, up, machine, hub_side=hub_side))
    return actions


def with_line(source: str, where: float, line: str) -> str:
    """``source`` with ``line`` inserted as a whole line at relative position ``where``."""
    lines = source.split("\n")
    lines.insert(round(where * len(lines)), line)
    return "\n".join(lines)


def content(nb: Notebook) -> Notebook:
    """The notebook with the tokens taken out and each source as its non-blank lines.

    Lines typed at one spot at the same time may end up as one line ("# a# b"): a
    character-level merge (as in any text CRDT) orders concurrent insertions, it does not
    separate them. So newlines next to tokens do not count; every other character does.
    """
    cells = [
        {**cell, "source": [line for line in TOKEN.sub("", cell["source"]).split("\n") if line]}
        for cell in nb["cells"]
    ]
    return {**nb, "cells": cells}


@dataclass
class Editor:
    """One machine's editor: it holds a buffer and saves it like Jupyter (temp + rename).

    A stale save writes the buffer as it is, however many daemon writes (and restarts)
    ago it was read, like JupyterLab's "overwrite" after "file changed on disk".
    """

    path: Path
    buffer: Notebook | None = None

    def load(self) -> None:
        self.buffer = parse(self.path.read_text())

    def save(self, action: Action) -> bool:
        """Type the action's token into its cell; True when the save was stale."""
        stale = action.stale and self.buffer is not None
        if not stale:
            self.load()
        assert self.buffer is not None
        cell = self.buffer["cells"][action.cell]
        cell["source"] = with_line(cell["source"], action.where, action.token)
        write_like_jupyter(self.path, split_lines(self.buffer))
        return stale


@dataclass
class Poller(FilePoller):
    """Reads every file every POLL_PERIOD_S on a thread: keeps each read that was invalid,
    and when tokens appeared in or vanished from each file (what a failure report shows)."""

    origin: float = 0.0  # time.monotonic() at the start of the schedule
    vanished: list[tuple[float, str, set[str]]] = field(default_factory=list)
    _seen: dict[Path, set[str]] = field(default_factory=dict)

    def on_valid(self, path: Path) -> None:
        tokens = set(TOKEN.findall(path.read_text(errors="replace")))
        gone = self._seen.get(path, set()) - tokens
        if gone:
            self.vanished.append((time.monotonic() - self.origin, path.parent.name, gone))
        self._seen[path] = tokens

    def losses_of(self, tokens: set[str]) -> list[str]:
        """When each of ``tokens`` vanished from a file (a stale save on disk shows some
        tokens missing for a moment, so only tokens missing at the end are worth it)."""
        return [
            f"{at:6.2f} s {name} lost {sorted(gone & tokens)}"
            for at, name, gone in self.vanished
            if gone & tokens
        ]


@dataclass
class Machines:
    lab: NetnsLab
    nodes: list[Node]
    paths: list[Path]

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {node.home.name} ---\n{node.log_tail(lines)}" for node in self.nodes)

    def set_link(self, machine: int, *, hub_side: bool, up: bool) -> None:
        host = self.lab.nodes[machine]
        # NetnsLab names the bridge's end of machine k's veth pair v<k>, counting from 1.
        namespace, interface = (
            (self.lab.hub, f"v{machine + 1}") if hub_side else (host.namespace, host.interface)
        )
        subprocess.run(
            ["ip", "-n", namespace, "link", "set", interface, "up" if up else "down"],
            check=True,
            capture_output=True,
            timeout=30,
        )


class Chaos:
    """Runs a schedule against the machines; restarts run on threads (a start takes seconds)."""

    def __init__(self, machines: Machines) -> None:
        self.machines = machines
        self.editors = [Editor(path) for path in machines.paths]
        self.counts: Counter[str] = Counter()
        self.unexpected_deaths: list[str] = []
        self._pool = ThreadPoolExecutor(MACHINES, thread_name_prefix="restart")
        self._starts: dict[int, Future[None]] = {}
        self._killed: set[int] = set()  # machines whose daemon the schedule killed
        self._handlers: dict[Kind, Callable[[Action], None]] = {
            Kind.SAVE: self._save,
            Kind.KILL: self._kill,
            Kind.RESTART: self._restart,
            Kind.CUT: lambda action: self._link(action, up=False),
            Kind.HEAL: lambda action: self._link(action, up=True),
        }

    def __enter__(self) -> Chaos:
        for editor in self.editors:
            editor.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Before the fixture stops the daemons: no start may land after their shutdown.
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, schedule: list[Action], origin: float) -> None:
        """Run each action at ``origin`` (a time.monotonic()) plus its time."""
        for action in schedule:
            delay = origin + action.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            print(f"[chaos] {time.monotonic() - origin:6.2f} s {action.describe()}")
            self._handlers[action.kind](action)
            self.counts[action.kind.value] += 1

    def settle(self) -> None:
        """Heal every link (both ends), then start every daemon that is down, at once."""
        for machine in range(MACHINES):
            for hub_side in (False, True):
                self.machines.set_link(machine, hub_side=hub_side, up=True)
        for machine, node in enumerate(self.machines.nodes):
            self._wait_started(machine)
            if node.daemon_pids():
                continue
            if machine not in self._killed:
                self.unexpected_deaths.append(f"m{machine} was not running at the end")
            self._restart(Action(DURATION_S, Kind.RESTART, machine))
            self.counts["restart"] += 1
        for machine in range(MACHINES):
            self._wait_started(machine)

    def _save(self, action: Action) -> None:
        if self.editors[action.machine].save(action):
            self.counts["stale saves"] += 1

    def _kill(self, action: Action) -> None:
        self._wait_started(action.machine)
        pids = self.machines.nodes[action.machine].daemon_pids()
        if not pids:
            self.unexpected_deaths.append(f"m{action.machine} was not running at {action.at:.2f}")
        for pid in pids:
            kill_9(pid)
        self._killed.add(action.machine)

    def _restart(self, action: Action) -> None:
        node = self.machines.nodes[action.machine]
        self._killed.discard(action.machine)
        self._starts[action.machine] = self._pool.submit(node.start)

    def _link(self, action: Action, *, up: bool) -> None:
        self.machines.set_link(action.machine, hub_side=action.hub_side, up=up)

    def _wait_started(self, machine: int) -> None:
        """Wait for a start in flight; a start that failed fails the test."""
        start = self._starts.pop(machine, None)
        if start is not None:
            start.result(timeout=60)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    """MACHINES namespaces, each with a daemon home and a work folder (no daemon yet)."""
    with netns_nodes(tmp_path, [f"m{index}" for index in range(MACHINES)]) as (lab, nodes):
        yield Machines(lab, nodes, [node.workdir / "chaos.ipynb" for node in nodes])


def chaos_seed() -> int:
    return int(os.environ.get(SEED_VARIABLE) or secrets.randbits(32))


def share_with_everyone(machines: Machines) -> None:
    """Machine 0 shares; the others join at once with one code; wait for a full mesh."""
    sharer, *joiners = machines.nodes
    code = sharer.share(machines.paths[0], "--uses", str(len(joiners)))
    with ThreadPoolExecutor(len(joiners)) as pool:
        list(pool.map(lambda node, path: node.join(code, path), joiners, machines.paths[1:]))

    def full_mesh() -> bool:
        return all(
            node.peers_synced(path, MACHINES - 1)
            for node, path in zip(machines.nodes, machines.paths, strict=True)
        )

    wait_until(full_mesh, JOIN_TIMEOUT_S, f"a synced full mesh\n{machines.logs()}")


def token_report(machines: Machines, poller: Poller, tokens: list[str]) -> str:
    """For a failure: per machine the tokens missing or doubled, when the missing ones
    vanished from which file, then the daemons' logs."""
    lines, lost = [], set()
    for index, path in enumerate(machines.paths):
        text = path.read_text()
        missing = [token for token in tokens if token not in text]
        doubled = [token for token in tokens if text.count(token) > 1]
        lost.update(missing)
        lines.append(f"m{index}: {len(missing)} missing {missing}, doubled {doubled}")
    return "\n".join([*lines, *poller.losses_of(lost), machines.logs()])


@dataclass
class Convergence:
    """All files equal, and that text has every token or has not changed for QUIET_S (a
    token lost for good must not hold the test for the whole timeout)."""

    paths: list[Path]
    tokens: list[str]
    text: str = ""
    since: float = 0.0

    def reached(self) -> bool:
        texts = {path.read_text() for path in self.paths}
        if len(texts) != 1:
            return False
        (text,) = texts
        if text != self.text:
            self.text, self.since = text, time.monotonic()
        quiet = time.monotonic() - self.since >= QUIET_S
        return quiet or all(token in text for token in self.tokens)


@pytest.mark.netns
@pytest.mark.timeout(240)
def test_chaos_kills_cuts_and_stale_saves_converge_exactly_once(machines: Machines) -> None:
    seed = chaos_seed()
    print(f"\n[chaos] seed {seed} (replay: {SEED_VARIABLE}={seed})")
    rng = random.Random(seed)
    original = generated_notebook(CELLS, seed=seed)
    write_like_jupyter(machines.paths[0], split_lines(original))
    share_with_everyone(machines)
    schedule = make_schedule(rng)
    saves = [action for action in schedule if action.kind is Kind.SAVE]
    tokens = [save.token for save in saves]

    origin = time.monotonic()
    poller = Poller(machines.paths, POLL_PERIOD_S, origin=origin)
    with poller, Chaos(machines) as chaos:
        chaos.run(schedule, origin)
        ended = time.monotonic()  # a daemon is down and a link cut: settle repairs them
        chaos.settle()
        convergence = Convergence(machines.paths, tokens)
        try:
            wait_until(convergence.reached, CONVERGE_TIMEOUT_S, "identical files")
        except pytest.fail.Exception as exc:
            pytest.fail(f"seed {seed}: {exc}\n{token_report(machines, poller, tokens)}")
        converge_s = convergence.since - ended

    print(
        f"[chaos] seed {seed}: {len(schedule)} actions {dict(chaos.counts)}; files final "
        f"{converge_s:.1f} s after the end of the schedule; {poller.reads} polls, "
        f"{len(poller.bad)} bad"
    )
    assert poller.bad == [], f"seed {seed}: invalid notebook files seen: {poller.bad[:5]}"
    assert chaos.unexpected_deaths == [], f"seed {seed}: daemons died by themselves"
    text = convergence.text
    not_once = {token: text.count(token) for token in tokens if text.count(token) != 1}
    assert not_once == {}, f"seed {seed}:\n{token_report(machines, poller, tokens)}"
    final = parse(text)
    misplaced = [
        save.token for save in saves if save.token not in final["cells"][save.cell]["source"]
    ]
    assert misplaced == [], f"seed {seed}: tokens outside the cell they were typed into"
    assert content(final) == content(original), f"seed {seed}: text around the tokens changed"


# An editor left open for a while (a minute of a peer's typing) and then saved.
STALE_WRITES = 20
# Both editors save this often while the other side's saves make their daemon write.
RACE_SAVES = 150
RACE_GAPS_S = (0.03, 0.037)

# What the chaos test found: stale saves the daemon cannot merge yet. Two loopback daemons
# (no namespaces needed); B's editor reads the file, peers' edits reach B's file, then B's
# editor saves its stale buffer with a line of its own.


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    notebook = tmp_path / "stale.ipynb"
    write_like_jupyter(notebook, split_lines(generated_notebook(CELLS)))
    with synced_pair(tmp_path / "pair", notebook) as pair:
        yield pair


def type_line(editor: Editor, cell: int, line: str, *, stale: bool = False) -> None:
    editor.save(Action(0.0, Kind.SAVE, 0, cell=cell, stale=stale, token=line))


def holds(path: Path, line: str) -> bool:
    return line in path.read_text()


def remote_lines_reach_b(pair: Pair, count: int) -> list[str]:
    """``count`` lines typed on A one at a time, each in B's file (a write) before the next."""
    lines = []
    for index in range(count):
        line = f"# remote line {index} from A"
        type_line(Editor(pair.a_file), index % CELLS, line)
        wait_until(functools.partial(holds, pair.b_file, line), what=f"{line!r} on B")
        lines.append(line)
    return lines


def assert_stale_save_merged(pair: Pair, editor: Editor, remote: list[str]) -> None:
    own = "# B: typed into a stale buffer"
    type_line(editor, CELLS - 1, own, stale=True)
    wait_until(lambda: pair.converged_with(own), what="both files equal, with B's line")
    text = pair.a_file.read_text()
    assert {line: text.count(line) for line in remote} == dict.fromkeys(remote, 1)


@pytest.mark.timeout(90)
def test_stale_save_while_the_daemon_is_down_keeps_remote_edits(pair: Pair) -> None:
    editor = Editor(pair.b_file)
    editor.load()
    remote = remote_lines_reach_b(pair, 1)
    pair.b.kill()
    type_line(editor, CELLS - 1, "# B: typed while the daemon is down", stale=True)
    pair.b.start()
    assert_stale_save_merged(pair, editor, remote)


@pytest.mark.timeout(90)
def test_stale_saves_before_and_after_a_restart_keep_remote_edits(pair: Pair) -> None:
    editor = Editor(pair.b_file)
    editor.load()
    remote = remote_lines_reach_b(pair, 1)
    merged = "# B: stale save merged before the restart"
    type_line(editor, CELLS - 2, merged, stale=True)
    wait_until(lambda: pair.converged_with(merged), what="B's stale save merged")
    pair.b.kill()
    type_line(editor, CELLS - 1, "# B: typed while the daemon is down", stale=True)
    pair.b.start()
    assert_stale_save_merged(pair, editor, remote)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("restart", [False, True], ids=["running", "restarted"])
def test_stale_save_after_many_remote_writes_keeps_them(pair: Pair, restart: bool) -> None:
    editor = Editor(pair.b_file)
    editor.load()
    remote = remote_lines_reach_b(pair, STALE_WRITES)
    assert STALE_WRITES > MAX_VERSIONS  # older than the versions the engine keeps whole
    if restart:
        pair.b.kill()  # the versions come back from B's update log
        pair.b.start()
    assert_stale_save_merged(pair, editor, remote)


def type_lines(path: Path, tag: str, gap_s: float, typed: list[str]) -> None:
    """RACE_SAVES saves, each a new line (read-modify-write, as fast as an editor saves)."""
    for index in range(RACE_SAVES):
        line = f"# {tag} save {index:03d}"
        type_line(Editor(path), index % CELLS, line)
        typed.append(line)
        time.sleep(gap_s)


@pytest.mark.timeout(90)
def test_saves_while_the_daemon_writes_are_never_lost(pair: Pair) -> None:
    typed: list[str] = []
    typists = [
        threading.Thread(target=type_lines, args=(path, tag, gap_s, typed))
        for path, tag, gap_s in zip((pair.a_file, pair.b_file), "AB", RACE_GAPS_S, strict=True)
    ]
    for typist in typists:
        typist.start()
    for typist in typists:
        typist.join()
    convergence = Convergence([pair.a_file, pair.b_file], typed)
    wait_until(convergence.reached, 30, "both files equal")
    assert {
        line: convergence.text.count(line) for line in typed if convergence.text.count(line) != 1
    } == {}
