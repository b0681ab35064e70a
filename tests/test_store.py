"""UpdateStore: a durable sqlite log of pycrdt updates, with compaction and metadata."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from p2prtc.adapters import store as store_module
from p2prtc.adapters.store import LogEntry, StoreCorrupt, StoreTooNew, UpdateStore

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_doc(store: UpdateStore) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in store.updates():
        doc.apply_update(update)
    return doc


def text_of(doc: Doc[Any], name: str = "source") -> str:
    return str(doc.get(name, type=Text))


class Recorder:
    """A pycrdt doc whose every edit is appended to a store as its own update."""

    def __init__(self, store: UpdateStore) -> None:
        self.store = store
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("source", type=Text)
        self.cells = self.doc.get("meta", type=Map)
        self.seqs: list[int] = []

    def edit(self, change: str) -> None:
        before = self.doc.get_state()
        if change.startswith("-"):
            del self.text[0 : int(change[1:])]
        elif change.startswith("="):
            self.cells[change[1:]] = len(self.text)
        else:
            self.text.insert(len(self.text) // 2, change)
        self.seqs.append(self.store.append(self.doc.get_update(before)))


EDITS = ["hello", " world", "=a", "-3", "xyz", "=b", "-1", "tail", "=a", "!"]


def test_round_trip_in_order_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "doc.sqlite"
    with UpdateStore(path) as store:
        seqs = [store.append(f"update {i}".encode()) for i in range(5)]
        assert seqs == sorted(seqs)
    with UpdateStore(path) as store:
        assert store.updates() == [f"update {i}".encode() for i in range(5)]
        assert store.count() == 5
        assert store.total_bytes() == sum(len(f"update {i}") for i in range(5))


def test_meta_set_get_replace_and_atomic_with_update(tmp_path: Path) -> None:
    path = tmp_path / "doc.sqlite"
    with UpdateStore(path) as store:
        assert store.get_meta("base") is None
        store.set_meta("base", b"v1")
        store.set_meta("base", b"v2")
        store.append_with_meta(b"u1", {"base": b"v3", "share": b"{}"})
    with UpdateStore(path) as store:
        assert store.get_meta("base") == b"v3"
        assert store.get_meta("share") == b"{}"
        assert store.updates() == [b"u1"]


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        with pytest.raises(sqlite3.ProgrammingError):
            store.append_with_meta(b"u1", {"bad": object()})  # type: ignore[dict-item]
        assert store.updates() == []
        assert store.append(b"u2") > 0
        assert store.updates() == [b"u2"]


def test_compaction_keeps_every_edit(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        recorder = Recorder(store)
        for change in EDITS:
            recorder.edit(change)
        before = load_doc(store)
        assert text_of(before) == str(recorder.text)

        store.compact(recorder.doc.get_update())

        assert store.count() == 1
        after = load_doc(store)
        assert text_of(after) == text_of(before)
        assert after.get("meta", type=Map).to_py() == before.get("meta", type=Map).to_py()
        assert after.get_state() == before.get_state()
        # The compacted doc still merges with later edits from the same history.
        recorder.edit("more")
        assert text_of(load_doc(store)) == str(recorder.text)


def test_partial_compaction_keeps_later_updates_after_the_snapshot(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        recorder = Recorder(store)
        for change in EDITS[:6]:
            recorder.edit(change)
        snapshot, upto = recorder.doc.get_update(), recorder.seqs[-1]
        for change in EDITS[6:]:
            recorder.edit(change)

        store.compact(snapshot, upto=upto)

        assert store.count() == 1 + len(EDITS[6:])
        assert store.updates()[0] == snapshot
        assert text_of(load_doc(store)) == str(recorder.text)
        assert store.append(b"next") > recorder.seqs[-1]


def test_compacting_an_empty_store_stores_the_state(tmp_path: Path) -> None:
    doc: Doc[Any] = Doc()
    doc.get("source", type=Text).insert(0, "from elsewhere")
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        store.compact(doc.get_update())
        assert text_of(load_doc(store)) == "from elsewhere"


def test_compaction_returns_space_to_the_file_system(tmp_path: Path) -> None:
    path = tmp_path / "doc.sqlite"
    with UpdateStore(path) as store:
        for _ in range(200):
            store.append(os.urandom(2000))
    grown = path.stat().st_size
    with UpdateStore(path) as store:
        store.compact(b"small")
    assert path.stat().st_size < grown // 10


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"this is a text file\n" * 50, id="not-sqlite"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:4096] + b"\0" * 4096 + data[8192:], id="zeroed-page"),
    ],
)
def test_damaged_file_is_reported_not_reset(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / "doc.sqlite"
    with UpdateStore(path) as store:
        for i in range(100):
            store.append(os.urandom(100) + bytes([i]))
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)

    with pytest.raises(StoreCorrupt) as caught:
        UpdateStore(path)

    assert str(path) in str(caught.value)
    assert str(caught.value).startswith("The saved state of a shared document is damaged")
    assert path.read_bytes() == damaged  # left for the user to inspect or restore


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    db.close()
    with pytest.raises(StoreCorrupt, match="not a p2prtc store"):
        UpdateStore(path)


def test_store_from_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "doc.sqlite"
    UpdateStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreTooNew):
        UpdateStore(path)


def entry(member: str, detail: str = "{}", *, concurrent: bool = False) -> LogEntry:
    return LogEntry(0, 1000.0, member, "save", detail, concurrent)


def test_log_entries_are_kept_with_their_update_newest_first(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        first = store.append(b"one", [entry("alice")])
        second = store.append_with_meta(b"two", {"k": b"v"}, [entry("bob"), entry("carol")])
        store.append(b"three")  # an update without entries (a repair)

        logged = store.log(10)
    assert [(e.seq, e.member) for e in logged] == [
        (second, "carol"),
        (second, "bob"),
        (first, "alice"),
    ]


def test_compaction_folds_updates_but_keeps_the_log(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        recorder = Recorder(store)
        for index in range(5):
            recorder.edit(f"edit {index}")
            store.append(b"\x00\x00", [entry(f"m{index}")])
        store.compact(load_doc(store).get_update())

        assert store.count() == 1
        assert [e.member for e in store.log(3)] == ["m4", "m3", "m2"]


def test_the_log_keeps_the_newest_entries_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "MAX_LOG_ENTRIES", 3)
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        for index in range(5):
            store.append(b"\x00\x00", [entry(f"m{index}")])
        assert [e.member for e in store.log(10)] == ["m4", "m3", "m2"]


def test_only_concurrent_entries_when_asked(tmp_path: Path) -> None:
    with UpdateStore(tmp_path / "doc.sqlite") as store:
        store.append(b"\x00\x00", [entry("a"), entry("b", concurrent=True), entry("c")])
        assert [e.member for e in store.log(10, concurrent_only=True)] == ["b"]


def test_a_store_of_schema_1_is_migrated_and_keeps_its_updates(tmp_path: Path) -> None:
    """A home written before the change log: its updates and metadata load as they were."""
    path = tmp_path / "doc.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE updates (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute(f"PRAGMA application_id={store_module.APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    source: Doc[Any] = Doc()
    source.get("source", type=Text).insert(0, "written by schema 1")
    db.execute("INSERT INTO updates(data) VALUES (?)", (source.get_update(),))
    db.execute("INSERT INTO meta(key, value) VALUES ('base_info', ?)", (b"x",))
    db.close()

    with UpdateStore(path) as store:
        assert text_of(load_doc(store)) == "written by schema 1"
        assert store.get_meta("base_info") == b"x"
        assert store.log(10) == []
        store.append(b"\x00\x00", [entry("alice")])
        assert [e.member for e in store.log(10)] == ["alice"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (store_module.SCHEMA_VERSION,)
    db.close()


# --- crash safety: a child process is SIGKILLed at random points --------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pycrdt import Doc, Text
    from p2prtc.adapters.store import UpdateStore

    path, run, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    store = UpdateStore(path)
    doc = Doc()
    if mode == "compact":
        for update in store.updates():
            doc.apply_update(update)
    text = doc.get("source", type=Text)
    for i in range(100_000):
        token = f"<{run}.{i}>"
        if mode == "append":
            store.append(token.encode())
        else:
            before = doc.get_state()
            text.insert(len(text), token)
            store.append(doc.get_update(before))
        print(token, flush=True)  # reported only once append() has returned
        if mode == "compact" and i % 2 == 1:
            print("compacting", flush=True)
            store.compact(doc.get_update())
    """
)


def run_and_kill(path: Path, run: int, mode: str, rng: random.Random) -> list[str]:
    """Start the child, SIGKILL it after a random number of lines; return reported tokens."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(run), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    lines: list[str] = []
    wanted = rng.randint(1, 40)
    while len(lines) < wanted:
        line = child.stdout.readline()
        assert line, f"child exited early with {child.wait()}"
        lines.append(line.strip())
        # Killing right after "compacting" usually lands inside the compaction transaction.
        if mode == "compact" and line.startswith("compacting") and rng.random() < 0.5:
            break
    child.send_signal(signal.SIGKILL)
    lines += child.stdout.read().split()  # whatever it printed before dying was done too
    child.wait()
    child.stdout.close()
    return [line for line in lines if line.startswith("<")]


def check_after_crash(stored: str, previous: str, reported: list[str], run: int) -> None:
    """Everything reported is there, once and in order; at most one in-flight extra."""
    done = previous + "".join(reported)
    assert stored.startswith(done), "an acknowledged append was lost"
    assert stored[len(done) :] in ("", f"<{run}.{len(reported)}>")


@pytest.mark.timeout(60)
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "doc.sqlite"
    stored = ""
    for run in range(10):
        reported = run_and_kill(path, run, "append", rng)
        with UpdateStore(path) as store:
            now = "".join(update.decode() for update in store.updates())
        check_after_crash(now, stored, reported, run)
        stored = now


@pytest.mark.timeout(60)
def test_compaction_survives_sigkill(tmp_path: Path) -> None:
    rng = random.Random(11)
    path = tmp_path / "doc.sqlite"
    stored = ""
    for run in range(10):
        reported = run_and_kill(path, run, "compact", rng)
        with UpdateStore(path) as store:
            now = text_of(load_doc(store))
            rows = store.count()
        check_after_crash(now, stored, reported, run)
        stored = now
    assert rows < stored.count("<") // 2, "the children compacted along the way"
