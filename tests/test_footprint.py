"""What a daemon loads: the WebRTC stack (aiortc, and PyAV/FFmpeg under it) is imported in
the background once links are coming (a share is open, a join started), never before the
daemon answers, and not at all by a daemon with nothing to link, which imports only aiortc's
codec-free dependencies (libsrtp among them) ahead of a join. Checked on real daemons
through /proc/PID/maps, the way a user would see which libraries a process holds.

A join over the LAN gets its notebook over the rendezvous pipe, not over WebRTC: the import
of the stack, which competes with the join for the interpreter, starts once the joined file
is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import SAMPLE, Node, copy_notebook, loopback_nodes, share_and_join, wait_until


def holds_ffmpeg(pid: int) -> bool:
    """Whether the process has FFmpeg's libraries (shipped with PyAV) mapped."""
    return "libavcodec" in Path(f"/proc/{pid}/maps").read_text()


def holds_libsrtp(pid: int) -> bool:
    """Whether the process has pylibsrtp's binding (an aiortc dependency, no codec) mapped."""
    return "pylibsrtp" in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture
def nodes(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[Node, Node, Path]]:
    """Two loopback daemon homes (none started yet) and A's copy of the sample notebook."""
    a, b = loopback_nodes(tmp_path, "a", "b")
    try:
        yield a, b, copy_notebook(notebooks_dir / SAMPLE, a.workdir / SAMPLE)
    finally:
        for node in (b, a):
            node.shut_down()


def test_webrtc_stack_is_loaded_only_when_links_are_coming(
    nodes: tuple[Node, Node, Path],
) -> None:
    a, b, notebook = nodes
    a.run("start")
    # Its background preload is over once libsrtp is in: PyAV must not have come with it.
    wait_until(lambda: holds_libsrtp(a.pid()), what="the idle daemon to preload")
    assert not holds_ffmpeg(a.pid()), "a daemon with no share loaded the WebRTC stack"

    joined = share_and_join(a, b, notebook)
    assert holds_ffmpeg(a.pid()) and holds_ffmpeg(b.pid())

    b.run("leave", str(joined))
    b.stop()
    b.start()  # resumes no share: nothing to link
    wait_until(lambda: holds_libsrtp(b.pid()), what="the restarted daemon to preload")
    assert not holds_ffmpeg(b.pid()), "a restarted daemon with no share loaded it"
    a.stop()
    a.start()  # resumes its share: peers will link, the stack loads in the background
    wait_until(lambda: holds_ffmpeg(a.pid()), what="the resumed sharer to load WebRTC")


def test_a_lan_join_writes_the_file_before_loading_the_webrtc_stack(
    nodes: tuple[Node, Node, Path],
) -> None:
    a, b, notebook = nodes
    b.run("start")  # warm: a joiner's daemon that holds no share yet
    wait_until(lambda: holds_libsrtp(b.pid()), what="the idle daemon to preload")

    joined = share_and_join(a, b, notebook)  # until the link is up too

    assert joined.read_bytes() == notebook.read_bytes()
    log = b.log()
    written = log.index(f"share {joined}: joining -> active")
    assert written < log.index("loading the WebRTC stack"), log
    assert holds_ffmpeg(b.pid())  # the link loaded it after
