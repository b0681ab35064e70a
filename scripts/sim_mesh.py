"""Simulate gossip sync over a large partial mesh with the real sans-IO core, no network.

    .venv/bin/python scripts/sim_mesh.py [--sizes 100 300 1000] [--edits 100] [--degree 6]
        [--loss 0.002] [--churn 0.005] [--seed 1] [--no-save]

Every peer is a real pycrdt Doc in p2prtc's notebook schema; every connection is a pair of
real ``PeerSync`` sessions relaying the way the daemon does (a ``RemoteUpdate`` from one peer
goes to all its other peers). Time advances in rounds: a message sent in one round arrives in
the next, so a round is one hop (a LAN one-way latency plus processing).

- Mesh: a random ring (so the graph is connected) plus random links until each peer has
  about ``degree`` neighbours: a partial mesh, most peers never talk directly.
- Loss: a WebRTC data channel is reliable and ordered, so a lost message means a broken
  connection. Each message is lost with probability ``loss``; the link is then torn down
  (messages in flight on it vanish) and re-established a few rounds later as new sessions,
  whose SyncStep1/SyncStep2 (anti-entropy) repairs whatever was lost.
- Churn: each round an online peer goes offline with probability ``churn`` for a few rounds
  (all its links drop); edits keep happening on offline peers (a user editing while the
  daemon is cut off); on return its links reconnect with new sessions.
- Edits: ``edits`` real edits at random peers over the first rounds: a line typed into a
  cell's source (Text insert), a line deleted again (Text delete: changes no state vector,
  so only the delete set carries it), a cell metadata key set (Map), a new cell (Array).

Measured: convergence (every doc renders the same notebook), exactly-once (each typed line
and new cell appears once, each deleted line nowhere, each metadata key set), how many
rounds each edit takes to reach 50/90/100 % of the peers (followed by state vector, so
deletions aside), rounds from the last edit to convergence, messages and bytes sent per
edit, and quiescence (once churn and loss stop, the wire drains: no gossip loop). Prints a
table; saves
bench-results/sim_mesh.json and docs/img/sim_mesh.png (needs matplotlib).
"""

from __future__ import annotations

import argparse
import bisect
import enum
import hashlib
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pycrdt import Doc, Text, TransactionEvent

from p2prtc.core.mesh import relay_targets
from p2prtc.core.model import cells_of, doc_to_notebook, load_notebook, make_cell
from p2prtc.core.notebook import Cell, Notebook
from p2prtc.core.statevector import decode_state_vector
from p2prtc.core.sync import (
    PeerSync,
    ProtocolViolation,
    RemoteUpdate,
    Send,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

DOC_ID = b"\x5a" * 16
JSON_PATH = REPO_ROOT / "bench-results" / "sim_mesh.json"
PLOT_PATH = REPO_ROOT / "docs" / "img" / "sim_mesh.png"
# Once churn and loss stop, the wire must drain within this many rounds (it takes about
# the mesh's diameter); more means messages keep circulating.
DRAIN_ROUNDS = 200
REACH_SHARES = (0.5, 0.9, 1.0)
INITIAL_SOURCES = (
    "# Load the data\nimport numpy as np\ndata = np.arange(10)\n",
    "Some *markdown* that explains\nwhat the next cell does.\n",
    "total = data.sum()\nprint(total)\n",
    "def scale(values, factor):\n    return values * factor\n",
    "scaled = scale(data, 2)\nscaled.mean()\n",
)


class EditKind(enum.Enum):
    TYPE_LINE = "type-line"
    DELETE_LINE = "delete-line"
    SET_METADATA = "set-metadata"
    ADD_CELL = "add-cell"


# How often each kind of edit happens (a DELETE_LINE with nothing to delete types instead).
EDIT_WEIGHTS = {
    EditKind.TYPE_LINE: 55,
    EditKind.DELETE_LINE: 15,
    EditKind.SET_METADATA: 15,
    EditKind.ADD_CELL: 15,
}


@dataclass(frozen=True)
class SimConfig:
    peers: int
    degree: int = 6
    edits: int = 100
    edit_rounds: int = 20  # edits are spread evenly over the first rounds
    loss: float = 0.002  # per message: the probability that it is lost and its link breaks
    churn: float = 0.005  # per online peer and round: the probability that it goes offline
    offline_rounds: tuple[int, int] = (3, 15)
    reconnect_rounds: tuple[int, int] = (1, 5)  # a broken link comes back after this long
    max_rounds: int = 2000
    seed: int = 1


@dataclass
class SimResult:
    config: SimConfig
    mean_degree: float
    converged: bool = False
    exactly_once: bool = False
    quiescent: bool = False
    last_edit_round: int = 0
    rounds_to_converge: int = -1  # from the last edit until every doc is the same
    # Per edit (deletions aside): rounds until it reached 50 %, 90 % and all of the others.
    reach: dict[str, list[int]] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)  # sent, by kind
    bytes: Counter[str] = field(default_factory=Counter)
    edits_by_kind: Counter[str] = field(default_factory=Counter)
    lost_messages: int = 0  # each broke its link
    dropped_in_flight: int = 0  # on a link that broke or whose peer went offline
    offline_events: int = 0
    connections: int = 0  # sessions opened, initial ones included
    drain_messages: int = 0  # sent after convergence, while the wire drained (not in messages)
    cpu_seconds: float = 0.0
    # Mean fraction of the other peers that hold an edit, by rounds since it was made.
    coverage: list[float] = field(default_factory=list)

    def per_edit(self, counter: Counter[str]) -> float:
        return sum(counter.values()) / max(1, self.config.edits)

    def median_reach(self, share: str) -> float:
        return statistics.median(self.reach[share]) if self.reach else -1

    def summary(self) -> dict[str, Any]:
        """The figures for the JSON file (the curve included)."""
        return {
            "config": asdict(self.config),
            "mean_degree": round(self.mean_degree, 2),
            "converged": self.converged,
            "exactly_once": self.exactly_once,
            "quiescent": self.quiescent,
            "last_edit_round": self.last_edit_round,
            "rounds_to_converge": self.rounds_to_converge,
            "rounds_to_reach_median": {share: self.median_reach(share) for share in self.reach},
            "rounds_to_reach_max": {share: max(rounds) for share, rounds in self.reach.items()},
            "messages": dict(self.messages),
            "bytes": dict(self.bytes),
            "messages_per_edit": round(self.per_edit(self.messages), 1),
            "bytes_per_edit": round(self.per_edit(self.bytes), 1),
            "messages_per_edit_per_peer": round(
                self.per_edit(self.messages) / self.config.peers, 2
            ),
            "edits_by_kind": dict(self.edits_by_kind),
            "lost_messages": self.lost_messages,
            "dropped_in_flight": self.dropped_in_flight,
            "offline_events": self.offline_events,
            "connections": self.connections,
            "drain_messages": self.drain_messages,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "coverage": [round(value, 4) for value in self.coverage],
        }


class Traffic(enum.Enum):
    GOSSIP = "gossip"  # incremental updates: local edits and relays
    ANTI_ENTROPY = "anti-entropy"  # SyncStep1/SyncStep2 of new sessions


@dataclass
class Link:
    """One edge of the mesh: when up, a PeerSync at each end; a new epoch per connection."""

    a: int
    b: int
    up: bool = False
    epoch: int = 0
    retry_at: int | None = None
    sessions: dict[int, PeerSync] = field(default_factory=dict)

    def other(self, peer: int) -> int:
        return self.b if peer == self.a else self.a


@dataclass
class Peer:
    index: int
    doc: Doc[Any]
    links: dict[int, Link] = field(default_factory=dict)  # by neighbour
    online: bool = True
    back_at: int = 0
    fingerprint: bytes = b""  # of the rendered notebook, refreshed when the doc changed
    dirty: bool = True
    awaited: set[int] = field(default_factory=set)  # edits (Spread indices) it does not have


@dataclass(frozen=True)
class Spread:
    """An edit that adds items, followed as it reaches peers: a peer holds it once its state
    vector has ``clock`` items from ``client`` (the editor's doc)."""

    client: int
    clock: int
    made: int  # round
    delays: list[int] = field(default_factory=list)  # rounds until each other peer had it


@dataclass(frozen=True)
class InFlight:
    link: Link
    epoch: int
    src: int
    dst: int
    message: bytes


@dataclass
class Expected:
    """What the converged notebook must contain, edit by edit."""

    typed: dict[str, str] = field(default_factory=dict)  # line -> id of the cell it went in
    deleted: set[str] = field(default_factory=set)
    metadata: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (cell, value)
    cells: set[str] = field(default_factory=set)


class MeshSim:
    """The mesh, the wire and the edit script of one run."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.round = 0
        self.wire: list[InFlight] = []
        self.expected = Expected(cells={cell["id"] for cell in initial_notebook()["cells"]})
        self.loss = config.loss
        self.churn = config.churn
        self.peers = self._make_peers()
        self.links = self._make_mesh()
        self.result = SimResult(config, mean_degree=2 * len(self.links) / config.peers)
        self.spreads: list[Spread] = []
        self.edit_at = self._edit_schedule()

    def _new_doc(self) -> Doc[Any]:
        # Seeded client ids make a run reproducible (Yjs orders concurrent inserts by them).
        return Doc(client_id=self.rng.getrandbits(32))

    def _make_peers(self) -> list[Peer]:
        """Every peer starts as a member holding the sharer's initial doc."""
        sharer = self._new_doc()
        load_notebook(sharer, initial_notebook())
        state = sharer.get_update()
        peers = [Peer(0, sharer)]
        for index in range(1, self.config.peers):
            doc = self._new_doc()
            doc.apply_update(state)
            peers.append(Peer(index, doc))
        return peers

    def _make_mesh(self) -> list[Link]:
        count, degree = self.config.peers, self.config.degree
        if not 2 <= degree < count:
            raise ValueError("the degree must be at least 2 and below the number of peers")
        order = list(range(count))
        self.rng.shuffle(order)
        pairs = {_pair(order[i], order[(i + 1) % count]) for i in range(count)}
        neighbours: dict[int, set[int]] = {peer: set() for peer in range(count)}
        for a, b in pairs:
            neighbours[a].add(b)
            neighbours[b].add(a)
        for peer in order:
            candidates = [p for p in range(count) if p != peer and p not in neighbours[peer]]
            self.rng.shuffle(candidates)
            for other in candidates:
                if len(neighbours[peer]) >= degree:
                    break
                if len(neighbours[other]) < degree:
                    pairs.add(_pair(peer, other))
                    neighbours[peer].add(other)
                    neighbours[other].add(peer)
        links = [Link(a, b) for a, b in sorted(pairs)]
        for link in links:
            self.peers[link.a].links[link.b] = link
            self.peers[link.b].links[link.a] = link
        return links

    def _edit_schedule(self) -> dict[int, int]:
        """Round -> how many edits happen in it."""
        schedule: Counter[int] = Counter(
            n * self.config.edit_rounds // self.config.edits for n in range(self.config.edits)
        )
        return dict(schedule)

    # -- connections -------------------------------------------------------------------

    def connect(self, link: Link) -> None:
        """New sessions at both ends; each sends its SyncStep1 (anti-entropy)."""
        link.up, link.retry_at = True, None
        link.epoch += 1
        self.result.connections += 1
        for peer, other in ((link.a, link.b), (link.b, link.a)):
            link.sessions[peer] = PeerSync(str(other))
        for peer in (link.a, link.b):
            step1 = link.sessions[peer].add_doc(DOC_ID, self.peers[peer].doc)
            self.send(link, peer, step1, Traffic.ANTI_ENTROPY)

    def break_link(self, link: Link, retry_at: int | None) -> None:
        link.up, link.retry_at = False, retry_at
        link.sessions.clear()

    def send(self, link: Link, src: int, messages: list[bytes], kind: Traffic) -> None:
        dst = link.other(src)
        for message in messages:
            self.wire.append(InFlight(link, link.epoch, src, dst, message))
            self.result.messages[kind.value] += 1
            self.result.bytes[kind.value] += len(message)

    def gossip(self, peer: int, update: bytes, exclude: int | None = None) -> None:
        """Send an update (local or received from ``exclude``) to every connected peer."""
        links = self.peers[peer].links
        for other in relay_targets(((o, link.up) for o, link in links.items()), exclude):
            link = links[other]
            messages = link.sessions[peer].local_update(DOC_ID, update)
            self.send(link, peer, messages, Traffic.GOSSIP)

    # -- one round -----------------------------------------------------------------------

    def step(self) -> None:
        """Deliver what the last round sent; what this round sends arrives in the next."""
        self._deliver()
        self._churn()
        self._reconnect()
        for _ in range(self.edit_at.get(self.round, 0)):
            self.edit(self.rng.randrange(self.config.peers))
        self._observe_peers()
        self.round += 1

    def _churn(self) -> None:
        for peer in self.peers:
            if peer.online and self.rng.random() < self.churn:
                peer.online = False
                peer.back_at = self.round + self.rng.randint(*self.config.offline_rounds)
                self.result.offline_events += 1
                for link in peer.links.values():
                    if link.up:
                        self.break_link(link, retry_at=None)
            elif not peer.online and self.round >= peer.back_at:
                peer.online = True
                for link in peer.links.values():
                    if self.peers[link.other(peer.index)].online:
                        self.connect(link)

    def _reconnect(self) -> None:
        for link in self.links:
            if link.retry_at is not None and self.round >= link.retry_at:
                if self.peers[link.a].online and self.peers[link.b].online:
                    self.connect(link)
                else:
                    link.retry_at = None  # the peer that comes back reconnects it

    def _deliver(self) -> None:
        arriving, self.wire = self.wire, []
        for item in arriving:
            link = item.link
            if not link.up or link.epoch != item.epoch:
                self.result.dropped_in_flight += 1
            elif self.rng.random() < self.loss:
                self.result.lost_messages += 1
                retry = self.round + self.rng.randint(*self.config.reconnect_rounds)
                self.break_link(link, retry)
            else:
                self._receive(link, item.src, item.dst, item.message)

    def _receive(self, link: Link, src: int, dst: int, message: bytes) -> None:
        for event in link.sessions[dst].receive(message):
            if isinstance(event, ProtocolViolation):
                raise AssertionError(f"peer {dst} got an invalid message: {event.reason}")
            if isinstance(event, Send):
                self.send(link, dst, event.messages, Traffic.ANTI_ENTROPY)
            elif isinstance(event, RemoteUpdate):
                self.peers[dst].dirty = True
                self.gossip(dst, event.update, exclude=src)

    def _observe_peers(self) -> None:
        """Fingerprint the docs that changed, and note which awaited edits reached them."""
        for peer in self.peers:
            if not peer.dirty:
                continue
            peer.dirty = False
            peer.fingerprint = fingerprint(peer.doc)
            vector = decode_state_vector(peer.doc.get_state())
            for index in list(peer.awaited):
                spread = self.spreads[index]
                if vector.get(spread.client, 0) >= spread.clock:
                    spread.delays.append(self.round - spread.made)
                    peer.awaited.remove(index)

    # -- edits -----------------------------------------------------------------------------

    def edit(self, index: int) -> None:
        peer = self.peers[index]
        kinds, weights = zip(*EDIT_WEIGHTS.items(), strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        number = sum(self.result.edits_by_kind.values())
        updates: list[bytes] = []

        def record(event: TransactionEvent) -> None:
            updates.append(event.update)

        subscription = peer.doc.observe(record)
        try:
            with peer.doc.transaction():
                kind = self._apply_edit(peer.doc, kind, number)
        finally:
            peer.doc.unobserve(subscription)
        self.result.edits_by_kind[kind.value] += 1
        peer.dirty = True
        if kind is not EditKind.DELETE_LINE:  # a deletion adds no items to follow
            self._follow(peer)
        for update in updates:
            self.gossip(index, update)

    def _follow(self, editor: Peer) -> None:
        client = editor.doc.client_id
        clock = decode_state_vector(editor.doc.get_state())[client]
        self.spreads.append(Spread(client, clock, self.round))
        for peer in self.peers:
            if peer is not editor:
                peer.awaited.add(len(self.spreads) - 1)

    def _apply_edit(self, doc: Doc[Any], kind: EditKind, number: int) -> EditKind:
        """Make one edit of ``kind``; returns the kind actually made."""
        cells = cells_of(doc)
        if kind is EditKind.DELETE_LINE and self._delete_a_line(doc):
            return kind
        cell = cells[self.rng.randrange(len(cells))]
        cell_id = str(cell["id"])
        if kind is EditKind.SET_METADATA:
            key = f"edit-{number}"
            cell["metadata"][key] = number
            self.expected.metadata[key] = (cell_id, number)
            return kind
        line = f"# edit {number:06d}\n"
        if kind is EditKind.ADD_CELL:
            new = make_cell({"id": f"cell-{number}", "cell_type": "code", "source": line})
            cells.insert(self.rng.randint(0, len(cells)), new)
            self.expected.cells.add(f"cell-{number}")
            self.expected.typed[line] = f"cell-{number}"
            return kind
        source = cell["source"]
        source.insert(self.rng.choice(line_starts(str(source))), line)
        self.expected.typed[line] = cell_id
        return EditKind.TYPE_LINE

    def _delete_a_line(self, doc: Doc[Any]) -> bool:
        """Delete a typed line this peer has; False when it has none (yet)."""
        candidates = [line for line in self.expected.typed if line not in self.expected.deleted]
        self.rng.shuffle(candidates)
        sources = {str(cell["id"]): cell["source"] for cell in cells_of(doc)}
        for line in candidates[:10]:
            source: Text | None = sources.get(self.expected.typed[line])
            start = -1 if source is None else str(source).find(line)
            if source is not None and start >= 0:
                del source[start : start + len(line)]
                self.expected.deleted.add(line)
                return True
        return False

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> SimResult:
        started = time.process_time()
        for link in self.links:
            self.connect(link)
        last_edit = max(self.edit_at)
        self.result.last_edit_round = last_edit
        while self.round < self.config.max_rounds:
            self.step()
            if self.round > last_edit and self._all_equal():
                self.result.converged = True
                break
        if self.result.converged:
            self.result.rounds_to_converge = self.round - 1 - last_edit
            self._measure_reach()
            self.result.exactly_once = all(self.check_exactly_once(p.doc) for p in self.peers)
            self.result.quiescent = self._drain()
        self.result.cpu_seconds = time.process_time() - started
        return self.result

    def _all_equal(self) -> bool:
        return len({peer.fingerprint for peer in self.peers}) == 1

    def _measure_reach(self) -> None:
        others = self.config.peers - 1
        delays = [sorted(spread.delays) for spread in self.spreads]
        assert all(len(spread) == others for spread in delays), "converged without an edit"
        self.result.reach = {
            f"{share:.0%}": [spread[math.ceil(share * others) - 1] for spread in delays]
            for share in REACH_SHARES
        }
        longest = max(spread[-1] for spread in delays)
        self.result.coverage = [
            statistics.fmean(bisect.bisect_right(spread, t) / others for spread in delays)
            for t in range(longest + 1)
        ]

    def _drain(self) -> bool:
        """Stop churn and loss, bring everyone online, and let the wire empty.

        Anti-entropy of the reconnections must change nothing, and gossip must die out.
        """
        final = self.peers[0].fingerprint
        self.loss, self.churn = 0.0, 0.0
        messages, sizes = Counter(self.result.messages), Counter(self.result.bytes)
        for peer in self.peers:
            peer.back_at = self.round
        for _ in range(DRAIN_ROUNDS):
            if not self.wire and all(link.up for link in self.links):
                break
            self.step()
        for link in self.links:  # a link whose retry was cancelled while a peer was away
            if not link.up:
                self.connect(link)
        for _ in range(DRAIN_ROUNDS):
            if not self.wire:
                break
            self.step()
        self.result.drain_messages = sum((self.result.messages - messages).values())
        self.result.messages, self.result.bytes = messages, sizes
        return not self.wire and all(peer.fingerprint == final for peer in self.peers)

    def check_exactly_once(self, doc: Doc[Any]) -> bool:
        """Every edit is in the notebook exactly once (a deleted line: nowhere)."""
        nb = doc_to_notebook(doc)
        cells = {cell["id"]: cell for cell in nb["cells"]}
        everything = "".join(cell["source"] for cell in nb["cells"])
        ids = Counter(cell["id"] for cell in nb["cells"])
        if any(ids[cell_id] != 1 for cell_id in self.expected.cells):
            return False
        for line, cell_id in self.expected.typed.items():
            wanted = 0 if line in self.expected.deleted else 1
            if everything.count(line) != wanted or cells[cell_id]["source"].count(line) != wanted:
                return False
        return all(
            cells[cell_id]["metadata"].get(key) == value
            for key, (cell_id, value) in self.expected.metadata.items()
        )


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def line_starts(text: str) -> list[int]:
    """Offsets where a typed line can go without splitting another line."""
    return [0] + [offset + 1 for offset, char in enumerate(text) if char == "\n"]


def initial_notebook() -> Notebook:
    cells: list[Cell] = [
        {
            "id": f"base-{n}",
            "cell_type": "markdown" if n == 1 else "code",
            "source": source,
            "metadata": {},
            **({} if n == 1 else {"outputs": [], "execution_count": None}),
        }
        for n, source in enumerate(INITIAL_SOURCES)
    ]
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def fingerprint(doc: Doc[Any]) -> bytes:
    rendered = orjson.dumps(doc_to_notebook(doc), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(rendered, digest_size=16).digest()


def simulate(config: SimConfig) -> SimResult:
    return MeshSim(config).run()


# -- report ---------------------------------------------------------------------------------

TABLE_HEADER = (
    f"{'peers':>6} {'degree':>6} {'edits':>5} {'conv':>4} {'once':>4} {'quiet':>5} "
    f"{'reach 50/90/100%':>16} {'max':>4} {'settle':>6} {'msg/edit':>8} {'per peer':>8} "
    f"{'kB/edit':>7} {'anti-ent%':>9} {'lost':>5} {'offline':>7} {'cpu s':>6}"
)
TABLE_NOTES = (
    "reach: rounds (hops) until an edit is at 50/90/100 % of the other peers, median over "
    "edits; max: the slowest edit; settle: rounds from the last edit until all docs are equal; "
    "per peer: messages sent per edit per peer; lost: messages lost (each broke its link); "
    "offline: peers that went away for a while"
)


def table_row(result: SimResult) -> str:
    messages = sum(result.messages.values())
    anti_entropy = 100 * result.messages[Traffic.ANTI_ENTROPY.value] / max(1, messages)
    reach = "/".join(f"{result.median_reach(share):g}" for share in result.reach) or "-"
    longest = max(result.reach.get("100%", [-1]))
    return (
        f"{result.config.peers:>6} {result.mean_degree:>6.2f} {result.config.edits:>5} "
        f"{_yes(result.converged):>4} {_yes(result.exactly_once):>4} "
        f"{_yes(result.quiescent):>5} {reach:>16} {longest:>4} {result.rounds_to_converge:>6} "
        f"{result.per_edit(result.messages):>8.0f} "
        f"{result.per_edit(result.messages) / result.config.peers:>8.2f} "
        f"{result.per_edit(result.bytes) / 1000:>7.1f} {anti_entropy:>9.1f} "
        f"{result.lost_messages:>5} {result.offline_events:>7} {result.cpu_seconds:>6.1f}"
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def save_plot(results: list[SimResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curve, cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    for result in results:
        rounds = range(len(result.coverage))
        label = f"{result.config.peers} peers"
        curve.step(rounds, [100 * f for f in result.coverage], where="post", label=label)
    config = results[0].config
    curve.set_title(
        f"Spread of an edit (loss {config.loss:.1%}/msg, churn {config.churn:.1%}/round)"
    )
    curve.set_xlabel("rounds (hops) since the edit")
    curve.set_ylabel("% of the other peers holding it (mean over edits)")
    curve.grid(alpha=0.3)
    curve.legend()
    sizes = [result.config.peers for result in results]
    per_peer = {
        kind: [r.messages[kind.value] / r.config.edits / r.config.peers for r in results]
        for kind in Traffic
    }
    cost.bar([str(s) for s in sizes], per_peer[Traffic.GOSSIP], label="gossip updates")
    cost.bar(
        [str(s) for s in sizes],
        per_peer[Traffic.ANTI_ENTROPY],
        bottom=per_peer[Traffic.GOSSIP],
        label="anti-entropy (step 1/2)",
    )
    cost.axhline(results[0].mean_degree, color="grey", linestyle="--", label="mean degree")
    cost.set_title("Messages sent per edit, per peer")
    cost.set_xlabel("peers")
    cost.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--degree", type=int, default=6)
    parser.add_argument("--loss", type=float, default=0.002)
    parser.add_argument("--churn", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="Print only.")
    args = parser.parse_args()
    results = []
    print(TABLE_NOTES)
    print(TABLE_HEADER)
    for peers in args.sizes:
        config = SimConfig(
            peers,
            degree=args.degree,
            edits=args.edits,
            loss=args.loss,
            churn=args.churn,
            seed=args.seed,
        )
        results.append(simulate(config))
        print(table_row(results[-1]), flush=True)
    if not args.no_save:
        JSON_PATH.parent.mkdir(exist_ok=True)
        summary = {"benchmark": "sim-mesh", "runs": [r.summary() for r in results]}
        JSON_PATH.write_text(json.dumps(summary, indent=1) + "\n")
        save_plot(results, PLOT_PATH)
        print(f"saved {JSON_PATH.relative_to(REPO_ROOT)} and {PLOT_PATH.relative_to(REPO_ROOT)}")
    if not all(r.converged and r.exactly_once and r.quiescent for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
