"""Real p2prtc daemons for end-to-end tests: each with its own home, driven through the CLI.

``Node`` runs the ``p2prtc`` command with a given environment (and optionally inside a
network namespace via ``ip netns exec``). Nothing here mocks the daemon: tests start real
processes, which talk over real sockets, aiortc and (inside namespaces) mDNS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from p2prtc.core.notebook import parse_notebook
from tests.netns import NetnsLab

# P2PRTC_TEST_DEBUG=1: daemons the tests start log at debug level (to chase a rare failure).
P2PRTC = [sys.executable, "-m", "p2prtc", *(["-v"] if os.environ.get("P2PRTC_TEST_DEBUG") else [])]
# The time at the start of each daemon log line (logging's asctime, local time).
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
# Two daemons on one machine: no mDNS (it would bind the real interfaces), ICE on loopback.
LOOPBACK_ENV = {"P2PRTC_INTERFACES": "127.0.0.1", "P2PRTC_MDNS": "0"}
# The notebook most end-to-end tests share (in tests/notebooks: the notebooks_dir fixture):
# 90 cells, code and markdown, text outputs.
SAMPLE = "lists.ipynb"


def write_like_jupyter(path: Path, nb: dict[str, Any]) -> bytes:
    """Save ``nb`` the way an editor does: a temp file renamed over the target.

    Returns the bytes written.
    """
    data = encode_like_jupyter(nb)
    save_bytes_like_an_editor(path, data)
    return data


def encode_like_jupyter(nb: dict[str, Any]) -> bytes:
    """The file Jupyter writes for ``nb``."""
    return (json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def save_bytes_like_an_editor(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file and rename it over ``path``, as editors save."""
    tmp = path.with_name(path.name + ".editor-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_notebook(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def cell_source(path: Path, index: int) -> str:
    return "".join(read_notebook(path)["cells"][index]["source"])


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError, IndexError):
            pass  # a file mid-replace or not there yet
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Node:
    """One daemon home (one "machine"), optionally inside a network namespace."""

    home: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None

    def command(self, *args: str) -> list[str]:
        argv = [*P2PRTC, *args]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        return argv

    def full_env(self) -> dict[str, str]:
        return {**os.environ, "P2PRTC_HOME": str(self.home), **self.env}

    def run(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env=self.full_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"p2prtc {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
                f"\n--- daemon log ---\n{self.log_tail()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def share(self, path: Path, *extra: str) -> str:
        return str(self.json("share", str(path), *extra)["code"])

    def join(self, code: str, dest: Path | None = None, *extra: str) -> Any:
        args = ["join", code] + ([str(dest)] if dest else []) + list(extra)
        return self.json(*args)

    def status(self) -> Any:
        return self.json("status")

    def pid(self) -> int:
        return int(self.status()["daemon"]["pid"])

    def kill(self) -> None:
        """kill -9 the daemon: no goodbye, no flush beyond what it already made durable."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), 10, "the daemon to die")

    def stop(self) -> None:
        self.run("stop", check=False, timeout=30)

    def start(self) -> None:
        """Start the daemon in the foreground mode, detached (as after a reboot)."""
        subprocess.Popen(
            self.command("daemon"),
            cwd=self.workdir,
            env=self.full_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: self.run("status", check=False).returncode == 0, 20, "daemon start")

    def daemon_pids(self) -> list[int]:
        """Every running ``p2prtc daemon`` process of this home, found in /proc.

        Found by the home in its environment, so a daemon that no longer answers on its
        control socket (hung, or mid-start) is found too.
        """
        return daemon_pids(self.home)

    def shut_down(self, timeout: float = 10) -> None:
        """Teardown: ask the daemon to stop, then kill -9 whatever of this home still runs.

        Never fails: it runs in finalizers, where the test may already have failed.
        """
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            self.run("stop", check=False, timeout=timeout)
        deadline = time.monotonic() + timeout
        while (pids := self.daemon_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log(self, since: int = 0) -> str:
        """The daemon's log from character ``since`` on (``len(node.log())`` marks a point)."""
        log = self.home / "daemon.log"
        return log.read_text(errors="replace")[since:] if log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        log = self.home / "daemon.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def log_between(self, start: float, end: float) -> list[str]:
        """The daemon log's lines written between two ``time.time()`` instants (a line
        without a time, such as a traceback's, goes with the line before it)."""
        log = self.home / "daemon.log"
        if not log.exists():
            return []
        kept, inside = [], False
        for line in log.read_text(errors="replace").splitlines():
            stamp = LOG_TIME.match(line)
            if stamp:
                written = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                inside = start <= written <= end
            if inside:
                kept.append(line)
        return kept

    def peers_synced(self, path: Path, count: int) -> bool:
        for share in self.status()["shares"]:
            if share["path"] == str(path):
                synced = [p for p in share["peers"] if p["synced"]]
                return len(synced) >= count
        return False


_FIRST_STATE = re.compile(r"first sync over the rendezvous pipe with .*: received (\d+) bytes")


def states_over_pipe(node: Node) -> list[int]:
    """The bytes of each first state the daemon received over a rendezvous pipe (from its
    log: core/pipesync.py), oldest first."""
    return [int(size) for size in _FIRST_STATE.findall(node.log())]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie counts as dead.

    A daemon started by ``Node.start()`` is this process's child: killed, it stays a zombie
    (nobody waits for it), and signalling a zombie succeeds.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may contain spaces and parentheses, state follows the last ")".
    return stat.rpartition(")")[2].split()[0] != "Z"


def daemon_pids(home: Path) -> list[int]:
    """PIDs of the ``p2prtc daemon`` processes whose P2PRTC_HOME is ``home``."""
    wanted = {f"P2PRTC_HOME={spelling}".encode() for spelling in (home, home.resolve())}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if b"p2prtc" in argv and b"daemon" in argv and wanted.intersection(environ):
            pids.append(int(entry.name))
    return pids


def edit_cell(path: Path, index: int, edit: str, *, prepend: bool = True) -> None:
    """Add the line ``edit`` to cell ``index`` (first or last line), saved like an editor."""
    nb = read_notebook(path)
    source = nb["cells"][index]["source"]
    if prepend:
        source.insert(0, edit + "\n")
    else:
        source.append("\n" + edit)
    write_like_jupyter(path, nb)


def share_and_join(a: Node, b: Node, notebook: Path, *share_args: str) -> Path:
    """A shares ``notebook``, B dials A's rendezvous port directly and joins; B's file."""
    return join_directly(a, b, notebook, a.share(notebook, *share_args))


def join_directly(a: Node, b: Node, notebook: Path, code: str) -> Path:
    """B dials A's rendezvous port directly and joins A's ``notebook`` with ``code``."""
    b.env["P2PRTC_PEERS"] = f"127.0.0.1:{a.status()['daemon']['rendezvous_port']}"
    joined = Path(b.join(code)["path"])
    wait_until(lambda: a.peers_synced(notebook, 1) and b.peers_synced(joined, 1), what="synced")
    return joined


@dataclass
class Pair:
    """Sharer A and joiner B: two loopback daemons synced over A's notebook."""

    a: Node
    b: Node
    a_file: Path
    b_file: Path

    def converged_with(self, line: str) -> bool:
        """Both files hold ``line`` and are byte-identical."""
        text = self.a_file.read_text()
        return line in text and self.b_file.read_bytes() == text.encode()


@contextlib.contextmanager
def synced_pair(root: Path, notebook: Path, names: tuple[str, str] | None = None) -> Iterator[Pair]:
    """Homes ``root/a`` and ``root/b`` on loopback (the daemons called ``names``, if given);
    A shares a copy of ``notebook`` and B joins. Both daemons are shut down at the end."""
    a, b = loopback_nodes(root, "a", "b")
    for node, name in zip((a, b), names or (), strict=False):
        node.run("config", "name", name)
    a_file = copy_notebook(notebook, a.workdir / notebook.name)
    try:
        yield Pair(a, b, a_file, share_and_join(a, b, a_file))
    finally:
        for node in (b, a):
            node.shut_down()


def stored_updates(home: Path) -> list[bytes]:
    """Every update in the update logs of ``home``, read through a read-only connection.

    Safe while the daemon runs (WAL readers do not block it); a test uses it to see that an
    edit is durable in a daemon's store even when its file could not be written.
    """
    updates: list[bytes] = []
    for store in sorted(home.glob("shares/*/doc.sqlite")):
        db = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True)
        try:
            updates += [bytes(row[0]) for row in db.execute("SELECT data FROM updates")]
        finally:
            db.close()
    return updates


def memory_mib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of ``pid`` in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) ``pid`` has used so far, from /proc."""
    # Fields after the command name (which may hold spaces): utime, stime are 14th, 15th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_memory(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def loopback_nodes(root: Path, *names: str) -> list[Node]:
    """Daemon homes ``root/<name>/home`` working in ``root/<name>/work``, loopback only."""
    nodes = []
    for name in names:
        (root / name / "work").mkdir(parents=True)
        nodes.append(Node(root / name / "home", root / name / "work", dict(LOOPBACK_ENV)))
    return nodes


@contextlib.contextmanager
def netns_nodes(
    root: Path, names: Sequence[str], env: Mapping[str, str] | None = None
) -> Iterator[tuple[NetnsLab, list[Node]]]:
    """One network namespace per name (a ``NetnsLab``), each with a daemon home
    ``root/<name>-home`` and a work folder ``root/<name>`` (no daemon yet): mDNS and ICE on
    the namespace's address only, plus ``env``.

    At the end every daemon is shut down (in parallel) before the namespaces go, since a
    namespace lives on while a process is inside; then no daemon and no namespace may be
    left over.
    """
    with NetnsLab(len(names)) as lab:
        nodes = []
        for name, host in zip(names, lab.nodes, strict=True):
            (root / name).mkdir()
            node_env = {"P2PRTC_INTERFACES": host.address, "P2PRTC_MDNS": "1", **(env or {})}
            nodes.append(Node(root / f"{name}-home", root / name, node_env, host.namespace))
        try:
            yield lab, nodes
        finally:
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(Node.shut_down, nodes))
        for node in nodes:
            assert not node.daemon_pids(), f"a daemon of {node.home} survived teardown"
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    assert lab.hub.rpartition("-")[0] not in listing.stdout, "a namespace survived teardown"


def linked_peers(status: dict[str, Any]) -> set[str]:
    """Ids of the daemons one daemon (its ``status``) has an open connection with, for its
    one share."""
    (share,) = status["shares"]
    return {peer["id"] for peer in share["peers"] if peer["connected"]}


def mesh_is_connected(statuses: Sequence[dict[str, Any]]) -> bool:
    """Every daemon (by its status) reaches every other one through open connections,
    maybe via relays."""
    edges = {status["daemon"]["id"]: linked_peers(status) for status in statuses}
    seen, todo = set(), [next(iter(edges))]
    while todo:
        daemon = todo.pop()
        if daemon not in seen:
            seen.add(daemon)
            todo.extend(peer for peer in edges[daemon] if peer in edges)
    return seen == set(edges)


def copy_notebook(source: Path, dest: Path) -> Path:
    shutil.copyfile(source, dest)
    dest.chmod(0o644)
    return dest


def kill_9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), 10, "the daemon to die")


def notebook_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a valid notebook right now, None when it is."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return notebook_data_problem(data)


def notebook_data_problem(data: bytes) -> str | None:
    """Why ``data`` is not a valid notebook file, None when it is."""
    try:
        json.loads(data)
        parse_notebook(data)
    except Exception as exc:  # any failure is what we report
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class FilePoller:
    """Reads files in a loop on a thread (every ``period_s``, 0: back to back); remembers
    every read that was not a notebook. Subclasses may check more in ``problem`` and see
    each valid read in ``on_valid``."""

    paths: list[Path]
    period_s: float = 0.0
    reads: int = 0
    bad: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FilePoller:
        self._thread = threading.Thread(target=self._run, name="file poller", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            for path in self.paths:
                self.reads += 1
                self._read(path)

    def _read(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.bad.append(f"{path.parent.name}: {type(exc).__name__}: {exc}")
            return
        problem = self.problem(data)
        if problem is None:
            self.on_valid(path, data)
        else:
            self.bad.append(f"{path.parent.name}: {problem}")

    def problem(self, data: bytes) -> str | None:
        """Why a read's ``data`` is not a valid notebook, None when it is."""
        return notebook_data_problem(data)

    def on_valid(self, path: Path, data: bytes) -> None:
        """A read of ``path`` found a valid notebook, ``data``."""
