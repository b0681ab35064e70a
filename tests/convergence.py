"""The convergence model: replicas that edit one notebook, the network between them, the check.

A replica is the daemon's side (the bare engine, or SharedFile over a real file and update
log) and an editor's buffer; users' edits are drawn from hypothesis' ``data`` or, for a
seed alone, from ``SeededData``. ``run`` plays random saves and causal deliveries, then
everyone gets everything; ``check`` asserts the end state. tests/test_convergence.py states
the properties and runs them; scripts/soak_moves.py soaks many seeds (it imports this module
as ``tests.convergence``, hence the package imports below).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

import nbformat
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pycrdt import Doc

from p2prtc.adapters.store import UpdateStore
from p2prtc.core import engine, model
from p2prtc.core.engine import NotebookEngine
from p2prtc.core.notebook import parse_notebook
from p2prtc.core.statevector import StateVector, decode_state_vector
from p2prtc.daemon import document, versions
from p2prtc.daemon.document import SharedFile, merged
from tests.nbgen import (
    Notebook,
    Replica,
    code_cell,
    dump,
    markdown_cell,
    nbformat_node,
    notebook,
    parse,
    stream,
)

# A cell's first line; a concurrent edit may leave a typed token on the same line.
MARKER = re.compile(r"#c\d+(?!\d)")
TOKEN = re.compile(r"<t\d+>")
ANY = st.integers(0, 10**6)  # an index, taken modulo whatever the buffer holds


def marker_of(source: str) -> str:
    found = MARKER.match(source)
    return found.group() if found else ""


@dataclass(frozen=True)
class Effect:
    """What a user's edit means for the end result."""

    typed: tuple[str, str] | None = None  # token, marker of its cell
    deleted: frozenset[str] = frozenset()  # tokens on a deleted line (merges can join lines)
    deleted_cell: str | None = None
    inserted_cell: str | None = None
    moved: tuple[str, ...] = ()  # markers of the cells the merge may delete and re-insert


WorldEdit = Callable[[Notebook, int], Effect | None]  # edits a buffer; None: nothing to do


@dataclass(frozen=True)
class Sent:
    """An update on the wire, with the state vector its sender had when making it."""

    update: bytes
    needs: StateVector


class Machine(Protocol):
    """A replica: the daemon's side (an engine, or SharedFile over real files) and the
    editor's buffer."""

    buffer: str

    @property
    def engine(self) -> NotebookEngine: ...

    @property
    def disk(self) -> str: ...

    def notebook(self) -> Notebook: ...

    def apply(self, update: bytes) -> None: ...

    def save_text(self, text: str) -> bytes | None: ...

    def write(self, *, reload: bool) -> bytes | None: ...


@dataclass
class FileReplica:
    """A machine as the daemon runs it: SharedFile over a real file and a real sqlite
    update log (its recall of older versions, history bounds and compaction), and the
    editor's buffer. What the daemon persists during a step is what it sends."""

    shared: SharedFile
    buffer: str

    @classmethod
    def sharer(cls, folder: Path, text: str) -> FileReplica:
        path = folder / "r0.ipynb"
        path.write_text(text)
        store = UpdateStore(path.with_suffix(".sqlite"))
        return cls(SharedFile.create(path, store, "r0", clock=replay_clock()), text)

    @classmethod
    def joiner(cls, folder: Path, name: str, state: bytes) -> FileReplica:
        path = folder / f"{name}.ipynb"
        store = UpdateStore(path.with_suffix(".sqlite"))
        shared = SharedFile.empty(path, store, name, clock=replay_clock())
        shared.doc.apply_update(state)
        shared.apply_remote(state)
        shared.write()
        return cls(shared, path.read_text())

    @property
    def engine(self) -> NotebookEngine:
        return self.shared.engine

    @property
    def disk(self) -> str:
        return self.shared.path.read_text()

    def notebook(self) -> Notebook:
        return parse(self.buffer)

    def apply(self, update: bytes) -> None:
        """A peer's update: applied (as the sync session does) and persisted. The daemon
        persists it with the write that follows; persisted here, it is not taken for
        something this replica sends (what it persists during a step)."""
        self.shared.doc.apply_update(update)
        self.shared.apply_remote(update)
        self.shared.save_unsaved()

    def save_text(self, text: str) -> bytes | None:
        """The editor saves; it then shows what the daemon wrote, if it wrote."""
        self.shared.path.write_text(text)
        sent = self._persisted(self.shared.read_and_ingest)
        self.buffer = self.disk
        return sent

    def write(self, *, reload: bool) -> bytes | None:
        sent = self._persisted(self.shared.write)
        if reload:
            self.buffer = self.disk
        return sent

    def save_while_down(self, text: str) -> bytes | None:
        """The editor saves while the daemon is down; the daemon restarts (its versions
        restored from the store) and catches up with the save."""
        self.shared.store.close()
        self.shared.path.write_text(text)
        store = UpdateStore(self.shared.store.path)
        self.shared = SharedFile.restore(
            self.shared.path, store, self.shared.member, clock=self.shared.clock
        )
        sent = self._persisted(self.shared.catch_up)
        self.buffer = self.disk
        return sent

    def _persisted(self, step: Callable[[], object]) -> bytes | None:
        """Run the daemon's ``step``; the updates it persisted meanwhile, as one."""
        before = self.shared.store.last_seq() or 0
        step()
        return merged(*(update for seq, update in self.shared.store.entries() if seq > before))


def replay_clock() -> Callable[[], float]:
    """A replica's clock for its edit stamps: one second per call from a fixed instant, so
    that a seed replays to the same doc (the wall clock made stamps differ run to run)."""
    ticks = itertools.count()
    return lambda: REPLAY_EPOCH + next(ticks)


# 2026-01-01 00:00 UTC: where replay clocks start.
REPLAY_EPOCH = 1767225600.0


@dataclass
class Peer:
    replica: Machine
    inbox: list[Sent] = field(default_factory=list)
    last_save: str = ""  # the text of the replica's last ingested save (or first load)

    def can_apply(self, sent: Sent) -> bool:
        """Causal delivery: everything the update builds on is here."""
        have = decode_state_vector(self.replica.engine.doc.get_state())
        return all(have.get(client, 0) >= clock for client, clock in sent.needs.items())

    def receive(self, sent: Sent, *, reload: bool) -> Sent | None:
        """Apply an update; the repair of moved cells this made, for the peers."""
        self.replica.apply(sent.update)
        needs = decode_state_vector(self.replica.engine.doc.get_state())
        repair = self.replica.write(reload=reload)
        return None if repair is None else Sent(repair, needs)


@dataclass
class World:
    """The replicas, the network between them, and what the test expects at the end."""

    peers: list[Peer]
    minor: int
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(100))
    typed: dict[str, str] = field(default_factory=dict)  # token -> marker of its cell
    deleted: set[str] = field(default_factory=set)  # typed tokens
    maybe_deleted: set[str] = field(default_factory=set)
    deleted_cells: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)
    moves: set[str] = field(default_factory=set)  # markers of cells moved at some point
    may_revert: set[str] = field(default_factory=set)  # markers and tokens
    sent: list[Sent] = field(default_factory=list)

    def save(self, peer: Peer, edit: WorldEdit, *, while_down: bool = False) -> None:
        """The peer's editor makes ``edit`` in its buffer and saves it (``while_down``: while
        its daemon is down, which then restarts: FileReplica only)."""
        replica = peer.replica
        nb = replica.notebook()
        effect = edit(nb, next(self.counter))
        if effect is None:
            return
        text = dump(nb)
        if replica.buffer != replica.disk and coincides(effect, replica.disk):
            self.may_revert |= unseen_changes(replica.buffer, replica.disk)
        ambiguous = replica.engine.is_known(text) or not effect.deleted <= set(
            TOKEN.findall(peer.last_save)
        )
        if not replica.engine.is_known(text):
            peer.last_save = text
        needs = decode_state_vector(replica.engine.doc.get_state())
        if while_down:
            assert isinstance(replica, FileReplica)
            update = replica.save_while_down(text)
        else:
            update = replica.save_text(text)
        self.expect(effect, ambiguous)
        if update is None:
            return
        self.broadcast(peer, Sent(update, needs))

    def broadcast(self, sender: Peer, sent: Sent) -> None:
        self.sent.append(sent)
        for other in self.peers:
            if other is not sender:
                other.inbox.append(sent)

    def expect(self, effect: Effect, ambiguous_deletion: bool) -> None:
        if effect.typed:
            token, marker = effect.typed
            self.typed[token] = marker
        if ambiguous_deletion:
            self.maybe_deleted.update(effect.deleted)
        else:
            self.deleted.update(effect.deleted)
        if effect.deleted_cell:
            self.deleted_cells.add(effect.deleted_cell)
        if effect.inserted_cell:
            self.markers.add(effect.inserted_cell)
        self.moves.update(effect.moved)


def coincides(effect: Effect, doc_text: str) -> bool:
    """Does a stale editor delete or move what the doc has already lost?"""
    markers, tokens = set(MARKER.findall(doc_text)), set(TOKEN.findall(doc_text))
    lost_cells = {effect.deleted_cell, *effect.moved} - markers
    return bool(lost_cells - {None} or effect.deleted - tokens)


def unseen_changes(buffer: str, doc_text: str) -> set[str]:
    """Markers and tokens the doc gained or lost since the stale editor's buffer."""
    have = set(MARKER.findall(buffer)) | set(TOKEN.findall(buffer))
    return (set(MARKER.findall(doc_text)) | set(TOKEN.findall(doc_text))) ^ have


# --- edits a user makes in the editor ----------------------------------------------------------


def type_line(data: st.DataObject) -> WorldEdit:
    cell_pick, line_pick = data.draw(ANY), data.draw(ANY)

    def edit(nb: Notebook, serial: int) -> Effect | None:
        if not nb["cells"]:
            return None
        cell = nb["cells"][cell_pick % len(nb["cells"])]
        lines = cell["source"].split("\n")
        token = f"<t{serial}>"
        lines.insert(1 + line_pick % len(lines), token)
        cell["source"] = "\n".join(lines)
        return Effect(typed=(token, marker_of(cell["source"])))

    return edit


def delete_line(data: st.DataObject) -> WorldEdit:
    cell_pick, line_pick = data.draw(ANY), data.draw(ANY)

    def edit(nb: Notebook, serial: int) -> Effect | None:
        candidates = [cell for cell in nb["cells"] if "\n" in cell["source"]]
        if not candidates:
            return None
        cell = candidates[cell_pick % len(candidates)]
        lines = cell["source"].split("\n")
        gone = lines.pop(1 + line_pick % (len(lines) - 1))
        cell["source"] = "\n".join(lines)
        return Effect(deleted=frozenset(TOKEN.findall(gone)))

    return edit


def insert_cell(data: st.DataObject) -> WorldEdit:
    pick, markdown = data.draw(ANY), data.draw(st.booleans())

    def edit(nb: Notebook, serial: int) -> Effect | None:
        marker = f"#c{serial}"
        cell = markdown_cell(marker) if markdown else code_cell(marker)
        if nb["nbformat_minor"] < 5:
            del cell["id"]
        nb["cells"].insert(pick % (len(nb["cells"]) + 1), cell)
        return Effect(inserted_cell=marker)

    return edit


def delete_cell(data: st.DataObject) -> WorldEdit:
    pick = data.draw(ANY)

    def edit(nb: Notebook, serial: int) -> Effect | None:
        if not nb["cells"]:
            return None
        cell = nb["cells"].pop(pick % len(nb["cells"]))
        return Effect(deleted_cell=marker_of(cell["source"]))

    return edit


def move_cell(data: st.DataObject) -> WorldEdit:
    source, target = data.draw(ANY), data.draw(ANY)

    def edit(nb: Notebook, serial: int) -> Effect | None:
        if len(nb["cells"]) < 2:
            return None
        start = source % len(nb["cells"])
        cell = nb["cells"].pop(start)
        end = target % (len(nb["cells"]) + 1)
        nb["cells"].insert(end, cell)
        # Swapping neighbours is the same as moving the other one: the engine may do that.
        moved = [cell] + ([nb["cells"][start]] if abs(start - end) == 1 else [])
        return Effect(moved=tuple(marker_of(one["source"]) for one in moved))

    return edit


def set_outputs(data: st.DataObject) -> WorldEdit:
    pick = data.draw(ANY)

    def edit(nb: Notebook, serial: int) -> Effect | None:
        code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
        if not code:
            return None
        cell = code[pick % len(code)]
        cell["outputs"] = [stream(f"run {serial}\n")]
        cell["execution_count"] = serial
        return Effect()

    return edit


MakeEdit = Callable[[st.DataObject], WorldEdit]
EDITS: list[MakeEdit] = [*[type_line] * 3, delete_line, insert_cell, delete_cell, set_outputs]
MOVES = [*EDITS, move_cell, move_cell]


# --- the run -----------------------------------------------------------------------------------


def start(n_replicas: int, minor: int, folder: Path | None = None) -> World:
    """The replicas: engines, or (``folder``) SharedFiles with their files there."""
    cells = [
        markdown_cell("#c0\n<t1>"),
        code_cell("#c1\n<t2>\n<t3>", [stream("out\n")], execution_count=1),
        code_cell("#c2"),
        markdown_cell("#c3\n<t4>"),
    ]
    text = dump(notebook(cells, minor=minor))
    sharer: Machine = (
        Replica.sharer("r0", text) if folder is None else FileReplica.sharer(folder, text)
    )
    state = sharer.engine.full_state()
    replicas = [sharer] + [
        Replica.joiner(name, state) if folder is None else FileReplica.joiner(folder, name, state)
        for name in (f"r{i}" for i in range(1, n_replicas))
    ]
    peers = [Peer(replica, last_save=replica.buffer) for replica in replicas]
    world = World(peers, minor)
    world.markers.update(marker_of(cell["source"]) for cell in cells)
    world.typed.update({"<t1>": "#c0", "<t2>": "#c1", "<t3>": "#c1", "<t4>": "#c3"})
    return world


def deliver(world: World, peer: Peer, rng: random.Random, *, keep: bool, reload: bool) -> bool:
    """Deliver one random update that can be applied; False when none can. A repair of
    moved cells it makes goes to the others like any update."""
    ready = [index for index, sent in enumerate(peer.inbox) if peer.can_apply(sent)]
    if not ready:
        return False
    index = rng.choice(ready)
    sent = peer.inbox[index] if keep else peer.inbox.pop(index)
    receive(world, peer, sent, reload=reload)
    return True


def receive(world: World, peer: Peer, sent: Sent, *, reload: bool) -> None:
    repair = peer.receive(sent, reload=reload)
    if repair is not None:
        world.broadcast(peer, repair)


def settle(world: World, rng: random.Random) -> None:
    """Everyone gets everything (repairs included), in a random causal order, and some
    updates twice."""
    for twice in (False, True):
        progress = True
        while progress:
            progress = False
            for peer in world.peers:
                while deliver(world, peer, rng, keep=False, reload=rng.random() < 0.5):
                    progress = True
        assert not any(peer.inbox for peer in world.peers), "an update never became applicable"
        for peer in world.peers if not twice else ():
            for sent in rng.sample(world.sent, min(3, len(world.sent))):
                receive(world, peer, sent, reload=rng.random() < 0.5)


def may_be_lost(world: World, token: str) -> bool:
    """Could the token be gone by a rule the test accepts (tests/test_convergence.py)?"""
    cell = world.typed[token]
    deleted = token in world.deleted or token in world.maybe_deleted
    lost_cell = cell in world.deleted_cells or cell in world.may_revert
    return deleted or lost_cell or token in world.may_revert


def may_come_back(world: World, token: str) -> bool:
    return token in world.may_revert or world.typed[token] in world.moves


def check_converged(world: World) -> str:
    """Every replica's file is the same valid notebook, each cell id once; that file."""
    rendered = {peer.replica.engine.render() for peer in world.peers}
    assert len(rendered) == 1, "replicas did not converge"
    text = rendered.pop()
    for peer in world.peers:
        assert peer.replica.disk == text
    ids = Counter(cell["id"] for cell in world.peers[0].replica.engine.notebook()["cells"])
    assert max(ids.values(), default=1) == 1, f"ids twice: {ids.most_common(2)}"
    if world.minor == 5:
        nbformat.validate(nbformat_node(text))  # type: ignore[no-untyped-call]
    return text


def check(world: World) -> None:
    """The end state, as tests/test_convergence.py's docstring states it."""
    nb = parse_notebook(check_converged(world))

    all_sources = "\n".join(cell["source"] for cell in nb["cells"])
    markers = Counter(MARKER.findall(all_sources))
    for marker in world.markers:
        count = markers[marker]
        assert count <= 1, f"cell {marker} is there {count} times"
        if marker not in world.deleted_cells and marker not in world.may_revert:
            assert count >= 1, f"cell {marker} is missing"

    tokens = Counter(TOKEN.findall(all_sources))
    for token in world.typed:
        count = tokens[token]
        assert count <= 1, f"{token} is there {count} times"
        if not may_be_lost(world, token):
            assert count >= 1, f"{token} was lost"
    for token in world.deleted:
        if not may_come_back(world, token):
            assert tokens[token] == 0, f"deleted {token} came back"


def run(
    data: st.DataObject,
    edits: list[MakeEdit],
    *,
    steps: int = 25,
    reloads: float = 0.6,
    folder: Path | None = None,
) -> World:
    """Random saves and deliveries, then everyone gets everything. An editor reloads after
    a daemon write with probability ``reloads``. With a ``folder``, the replicas are
    SharedFiles over real files and update logs there, which compact after a few updates."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    if currently_in_test_context():  # scripts/soak_moves.py runs this outside hypothesis
        note(f"replay: seed {seed} with the draws above (client ids come from the seed)")
    rng = random.Random(seed)
    with seeded_client_ids(seed), mock.patch.object(versions, "COMPACT_AFTER_UPDATES", COMPACT):
        return _run(data, edits, rng, steps=steps, reloads=reloads, folder=folder)


# Over real files, the share of saves made while the replica's daemon is down.
SAVES_WHILE_DOWN = 0.1

# Over real files, the update log compacts after this many updates (500 in the daemon), so
# that short runs compact too.
COMPACT = 6


@contextlib.contextmanager
def seeded_client_ids(seed: int) -> Iterator[None]:
    """Replica docs (and the engine's forks) take client ids from the seed, so that a seed
    replays exactly: Yjs orders concurrent insertions and picks repair survivors by them.
    So do the cell ids minted for files without ids (uuid4)."""
    ids = random.Random(seed ^ 0x5EED)
    cell_ids = random.Random(seed ^ 0xCE11)

    def seeded_uuid4() -> uuid.UUID:
        return uuid.UUID(int=cell_ids.getrandbits(128), version=4)

    def seeded_doc(*args: Any, client_id: int | None = None, **kwargs: Any) -> Doc[Any]:
        return Doc(
            *args, client_id=ids.getrandbits(32) if client_id is None else client_id, **kwargs
        )

    state = random.getstate()
    random.seed(seed)  # the engine's forks draw from the global generator
    try:
        with (
            mock.patch.object(engine, "Doc", seeded_doc),
            mock.patch.object(document, "Doc", seeded_doc),
            mock.patch.object(versions, "Doc", seeded_doc),
            mock.patch.object(model.uuid, "uuid4", seeded_uuid4),
        ):
            yield
    finally:
        random.setstate(state)


def _run(
    data: st.DataObject,
    edits: list[MakeEdit],
    rng: random.Random,
    *,
    steps: int,
    reloads: float,
    folder: Path | None,
) -> World:
    n_replicas = data.draw(st.integers(2, 5), label="replicas")
    world = start(n_replicas, data.draw(st.sampled_from([5, 4]), label="minor"), folder)
    for _ in range(data.draw(st.integers(1, steps), label="steps")):
        peer = world.peers[data.draw(st.integers(0, n_replicas - 1), label="replica")]
        if data.draw(st.booleans(), label="save?"):
            make_edit = data.draw(st.sampled_from(edits), label="edit")
            # Over files, some saves land while the daemon is down (a restart follows).
            while_down = folder is not None and rng.random() < SAVES_WHILE_DOWN
            world.save(peer, make_edit(data), while_down=while_down)
        else:
            deliver(world, peer, rng, keep=rng.random() < 0.2, reload=rng.random() < reloads)
    settle(world, rng)
    return world


class SeededData:
    """What ``run`` draws from (hypothesis' ``data``), from a seed alone: a seed replays
    exactly whatever the hypothesis version (scripts/soak_moves.py, the seeded tests)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def draw(self, strategy: Any, label: str | None = None) -> Any:
        shown = repr(strategy)
        if shown.startswith("integers("):
            low, high = (int(part.split("=")[-1]) for part in shown[9:-1].split(","))
            return self._rng.randint(low, high)
        if shown.startswith("booleans("):
            return self._rng.random() < 0.5
        if shown.startswith("sampled_from("):
            return self._rng.choice(list(strategy.elements))
        raise ValueError(f"no seeded draw for {shown}")
