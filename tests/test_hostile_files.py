"""Hostile files (issue 6): what a shared notebook on disk can turn into, with real daemons.

Garbage, a truncated or emptied file, a 200 MB sparse file, a valid notebook over the 64 MiB
limit, a folder in its place, a deleted file, a read-only file, a full disk. For each: the
daemon says what is wrong (``status --json`` last_error), the peer's file is untouched (bad
input never spreads), a peer's edit made meanwhile is kept (durable in the store even while
the file cannot take it) and reaches the file once it is good again.

Two daemons on loopback (no mDNS, static peer, ICE on 127.0.0.1). The sharer A's file is the
one that gets hurt; the joiner B is the healthy peer that keeps editing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import (
    LOOPBACK_ENV,
    SAMPLE,
    Node,
    Pair,
    cell_source,
    copy_notebook,
    loopback_nodes,
    read_notebook,
    share_and_join,
    stored_updates,
    synced_pair,
    wait_until,
    write_like_jupyter,
)
from environment import missing

from p2prtc.core.notebook import MAX_NOTEBOOK_BYTES, parse_notebook

pytestmark = pytest.mark.timeout(120)

NOT_A_NOTEBOOK = "The file is not a valid Jupyter notebook."
TOO_LARGE = "The notebook is larger than p2prtc's size limit."
IS_A_FOLDER = "is a folder"
DISK_FULL = "could not be updated (disk full or unwritable?)"
# The full-disk case: a small tmpfs holding the joiner's home and notebook.
TMPFS_SIZE = "600k"


def last_error(node: Node) -> str | None:
    (share,) = node.status()["shares"]
    error: str | None = share["last_error"]
    return error


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Pair]:
    """One pair for the module (A's file gets hurt): sharing and joining is the slow part
    of every case."""
    with synced_pair(tmp_path_factory.mktemp("hostile"), notebooks_dir / SAMPLE) as pair:
        yield pair


@pytest.fixture
def pair(shared: Pair) -> Pair:
    """The module's pair, checked healthy: both files equal, valid, no error reported."""
    wait_until(lambda: shared.a_file.read_bytes() == shared.b_file.read_bytes(), what="equal")
    assert last_error(shared.a) is None and last_error(shared.b) is None
    parse_notebook(shared.a_file.read_bytes())
    return shared


def marker_in_store(node: Node, marker: str) -> bool:
    """Whether an update holding ``marker`` is durable in the node's update log."""
    return any(marker.encode() in update for update in stored_updates(node.home))


def add_line(nb: dict[str, Any], index: int, line: str) -> dict[str, Any]:
    nb["cells"][index]["source"].insert(0, line + "\n")
    return nb


# --- corruptions --------------------------------------------------------------------------


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # in place, like an editor killed mid-save


def emptied(path: Path) -> None:
    path.write_bytes(b"")


def sparse_200_mb(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(200 * 1024 * 1024)


def valid_but_too_large(path: Path) -> None:
    """A real notebook just over the limit: one cell holding 64 MiB of text."""
    nb = read_notebook(path)
    nb["cells"][0]["source"] = ["x" * MAX_NOTEBOOK_BYTES]
    write_like_jupyter(path, nb)


def folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def undo(path: Path) -> None:
    """Take away whatever is at ``path`` (file or folder)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage": (garbage, NOT_A_NOTEBOOK),
    "truncated": (truncated, NOT_A_NOTEBOOK),
    "emptied": (emptied, NOT_A_NOTEBOOK),
    "sparse-200MB": (sparse_200_mb, TOO_LARGE),
    "valid-over-64MiB": (valid_but_too_large, TOO_LARGE),
    "folder": (folder, IS_A_FOLDER),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_bad_file_is_reported_kept_local_and_recovers(pair: Pair, corruption: str) -> None:
    corrupt, expected_error = CORRUPTIONS[corruption]
    good = pair.b_file.read_bytes()
    from_b, from_a = f"B edited while A's file was {corruption}", f"A repaired {corruption}"

    corrupt(pair.a_file)
    wait_until(lambda: expected_error in (last_error(pair.a) or ""), what="A to report the file")
    assert pair.b_file.read_bytes() == good  # nothing of it spread
    assert last_error(pair.b) is None

    # A peer's edit meanwhile: durable in A's store, though A's file cannot take it, and A
    # never overwrites a file it could not read.
    write_like_jupyter(pair.b_file, add_line(json.loads(good), 2, from_b))
    wait_until(lambda: marker_in_store(pair.a, from_b), what="B's edit in A's store")
    assert expected_error in (last_error(pair.a) or "")
    assert not pair.a_file.is_file() or from_b.encode() not in pair.a_file.read_bytes()

    # The user repairs the file from the version they had, with an edit of their own: both
    # edits end up in both files, once.
    undo(pair.a_file)
    write_like_jupyter(pair.a_file, add_line(json.loads(good), 5, from_a))

    def both_everywhere() -> bool:
        return all(
            cell_source(path, 2).count(from_b) == 1 and cell_source(path, 5).count(from_a) == 1
            for path in (pair.a_file, pair.b_file)
        )

    wait_until(both_everywhere, what="both edits in both files")
    wait_until(lambda: pair.a_file.read_bytes() == pair.b_file.read_bytes(), what="equal files")
    assert last_error(pair.a) is None


def test_deleted_file_is_written_back_and_never_empties_the_peer(pair: Pair) -> None:
    good = pair.b_file.read_bytes()
    cells = len(read_notebook(pair.b_file)["cells"])

    pair.a_file.unlink()
    wait_until(pair.a_file.is_file, what="A's daemon to write the file back")
    assert pair.a_file.read_bytes() == good
    assert pair.b_file.read_bytes() == good
    assert last_error(pair.a) is None

    # Deleted again, and a peer edits before the grace is over: the file comes back with it.
    pair.a_file.unlink()
    from_b = "B edited while A's file was deleted"
    write_like_jupyter(pair.b_file, add_line(json.loads(good), 3, from_b))
    wait_until(lambda: from_b in cell_source(pair.a_file, 3), what="the file back with B's edit")
    wait_until(lambda: pair.a_file.read_bytes() == pair.b_file.read_bytes(), what="equal files")
    assert len(read_notebook(pair.b_file)["cells"]) == cells


def test_read_only_file_still_follows_the_share(pair: Pair) -> None:
    """A read-only file is replaced by rename and stays read-only (documented choice).

    The read-only bit guards the file against the user's own editors; the share's contract
    is that the file follows the shared notebook, and ``p2prtc leave`` is how to stop that.
    """
    pair.a_file.chmod(0o444)
    try:
        from_b = "B edited while A's file was read-only"
        write_like_jupyter(pair.b_file, add_line(read_notebook(pair.b_file), 4, from_b))
        wait_until(lambda: from_b in cell_source(pair.a_file, 4), what="B's edit in A's file")
        assert stat.S_IMODE(pair.a_file.stat().st_mode) == 0o444
        assert last_error(pair.a) is None
        wait_until(lambda: pair.a_file.read_bytes() == pair.b_file.read_bytes(), what="equal")
    finally:
        pair.a_file.chmod(0o644)


# --- a full disk ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                os.write(fd, b"\1" * 4096)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return filler


def test_full_disk_is_reported_loses_nothing_and_catches_up(
    small_disk: Path, tmp_path: Path, notebooks_dir: Path
) -> None:
    """B's home and notebook on a full disk while A edits; then space is freed."""
    (a,) = loopback_nodes(tmp_path, "a")
    (small_disk / "work").mkdir()
    b = Node(small_disk / "home", small_disk / "work", dict(LOOPBACK_ENV))
    a_file = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "analysis.ipynb")
    try:
        b_file = share_and_join(a, b, a_file)
        good = b_file.read_bytes()
        filler = fill(small_disk)

        from_a = "A edited while B's disk was full"
        edit = add_line(read_notebook(a_file), 2, from_a)
        write_like_jupyter(a_file, edit)
        wait_until(lambda: DISK_FULL in (last_error(b) or ""), what="B to report the full disk")
        assert b_file.read_bytes() == good  # still the last good file, whole
        assert last_error(a) is None

        filler.unlink()
        # The writer retries every second: catching up takes a moment, not a new edit.
        wait_until(lambda: from_a in cell_source(b_file, 2), 10, "B's file to catch up")
        wait_until(lambda: last_error(b) is None, what="B's error to clear")
        assert a_file.read_bytes() == b_file.read_bytes()

        # Durable on B, not only re-sent by A: B alone, file deleted, rebuilds it from its store.
        a.stop()
        b.stop()
        b.env.pop("P2PRTC_PEERS")
        b_file.unlink()
        b.start()
        wait_until(b_file.is_file, what="B to write its copy back")
        assert from_a in cell_source(b_file, 2)
    finally:
        for node in (a, b):
            node.shut_down()
