"""Deterministic crashes: a SharedFile process killed (SIGKILL) at each named crash point.

The crash points (``crash_points.crash_point``) sit where a crash must lose nothing: after a
save's update is persisted and before the merged file is written, around the atomic write,
around compaction, and in the write-race paths (an editor's save found just before the
rename, or displaced by it). Each test runs a scenario in a child process over a real store
and file with ``P2PRTC_CRASH_AT`` set, checks that it died at that point, then restarts the
SharedFile in the test process (``restore`` + ``catch_up``, as the daemon does) and checks
that the file is a valid notebook with every line exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook
from nbgen import THIS_DAEMON, nbformat_node, peer_update, render_with_line

from p2prtc.adapters import files
from p2prtc.adapters.store import UpdateStore
from p2prtc.daemon import file_writer, versions
from p2prtc.daemon.crash_points import CRASH_AT_ENV
from p2prtc.daemon.document import SharedFile

USER = "USER LINE"


def remote(shared: SharedFile, line: str) -> None:
    """A peer's line arrives: applied, persisted, written (as the daemon does)."""
    print(line, flush=True)  # the test expects every line announced before it is applied
    update = peer_update(shared.engine, 3, line)
    shared.doc.apply_update(update)
    shared.apply_remote(update)
    shared.write()


def stale_save(shared: SharedFile) -> None:
    """An editor saves a buffer read before a peer's line: merged, then written."""
    buffer = shared.path.read_text()
    remote(shared, "REMOTE 0")
    print(USER, flush=True)
    shared.path.write_text(render_with_line(buffer, 5, USER))
    shared.read_and_ingest()


def remote_lines(shared: SharedFile) -> None:
    """Peers' lines, a save that ends the older versions, and a line that compacts the log."""
    versions.COMPACT_AFTER_UPDATES = 4
    for index in range(6):
        remote(shared, f"REMOTE {index}")
    print(USER, flush=True)
    shared.path.write_text(render_with_line(shared.path.read_text(), 5, USER))
    shared.read_and_ingest()
    remote(shared, "REMOTE AFTER")


def editor_saves_during(shared: SharedFile, race: Callable[[Callable[[], None]], None]) -> None:
    """A peer's line is written while the editor saves a line of its own (``race`` decides
    when: just before the write's last check, or in the instant of its rename)."""
    saved = render_with_line(shared.path.read_text(), 5, USER)

    def editor_save() -> None:
        print(USER, flush=True)
        shared.path.write_text(saved)

    race(editor_save)
    remote(shared, "REMOTE 0")


def before_the_check(editor_save: Callable[[], None]) -> None:
    real = file_writer.atomic_write

    def racing(
        path: Path, data: bytes, *, unless_changed_from: files.Signature | None
    ) -> bytes | None:
        editor_save()
        return real(path, data, unless_changed_from=unless_changed_from)

    file_writer.atomic_write = racing  # type: ignore[assignment]


def in_the_rename(editor_save: Callable[[], None]) -> None:
    real = files._exchange

    def racing(tmp: Path, path: Path) -> bool:
        editor_save()
        return real(tmp, path)

    files._exchange = racing


SCENARIOS: dict[str, Callable[[SharedFile], None]] = {
    "stale-save": stale_save,
    "remote-lines": remote_lines,
    "editor-before-check": lambda shared: editor_saves_during(shared, before_the_check),
    "editor-in-rename": lambda shared: editor_saves_during(shared, in_the_rename),
}


@pytest.mark.parametrize(
    ("scenario", "point"),
    [
        ("stale-save", "ingest-persisted"),
        ("remote-lines", "write-pending"),
        ("remote-lines", "write-renamed"),
        ("remote-lines", "compact-before"),
        ("remote-lines", "compact-after"),
        ("editor-before-check", "write-retry"),
        ("editor-in-rename", "write-displaced"),
    ],
)
def test_killed_at_a_crash_point_loses_nothing(
    tmp_path: Path, notebooks_dir: Path, scenario: str, point: str
) -> None:
    path = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "analysis.ipynb")
    SharedFile.create(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON).store.close()

    child = subprocess.run(
        [sys.executable, __file__, scenario, str(tmp_path)],
        env={**os.environ, CRASH_AT_ENV: point, "PYTHONPATH": str(Path(__file__).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert child.returncode == -signal.SIGKILL, child.stderr
    assert f"crash point {point}" in child.stderr
    lines = child.stdout.split("\n")[:-1]
    assert lines, "the scenario died before it did anything"
    restarted = SharedFile.restore(path, UpdateStore(tmp_path / "doc.sqlite"), THIS_DAEMON)
    restarted.catch_up()
    text = path.read_text()
    nbformat_node(text)  # JSON nbformat reads
    assert {line: text.count(line) for line in lines} == dict.fromkeys(lines, 1)
    assert restarted.engine.render() == text


def run_scenario(scenario: str, folder: Path) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    path = folder / "analysis.ipynb"
    shared = SharedFile.restore(path, UpdateStore(folder / "doc.sqlite"), THIS_DAEMON)
    shared.catch_up()
    SCENARIOS[scenario](shared)
    print("the crash point was never reached", file=sys.stderr)


if __name__ == "__main__":
    run_scenario(sys.argv[1], Path(sys.argv[2]))
