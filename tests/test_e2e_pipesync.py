"""A joiner's first state over the rendezvous pipe (core/pipesync.py), through real daemons.

Two loopback daemons: B dials A's rendezvous port, so the pipe is a LAN one and both name
the feature. A generated notebook of a few MB (images: nothing compresses it) spans dozens
of pipe messages. It must arrive whole, byte for byte, over the pipe (B's log says how many
bytes came that way), and edits must then travel both ways over WebRTC as always.

A daemon of the release before the feature (this branch's base, run from this clone's
history like tests/test_compat.py) does not name it: a join across the two, either way
round, syncs over WebRTC as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import (
    SAMPLE,
    cell_source,
    copy_notebook,
    edit_cell,
    join_directly,
    loopback_nodes,
    states_over_pipe,
    wait_until,
)
from nbgen import big_outputs_notebook, dump
from releases import on_release, release_source

pytestmark = pytest.mark.timeout(180)

# About 50 sealed pipe messages of 64 KiB: the chunking and the bound checks run for real.
NOTEBOOK_MB = 3.0
# The release before the pipe sync: its daemons never name the feature.
RELEASE_WITHOUT_PIPE_SYNC = "af39105c10cdbe010e9b7ea574c244e6d2da1801"


def test_a_big_join_arrives_whole_over_the_pipe_and_edits_follow_over_webrtc(
    tmp_path: Path,
) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    a_file = a.workdir / "big.ipynb"
    a_file.write_text(dump(big_outputs_notebook(NOTEBOOK_MB)))
    try:
        b_file = join_directly(a, b, a_file, a.share(a_file))
        assert b_file.read_bytes() == a_file.read_bytes()
        (size,) = states_over_pipe(b)
        assert size > NOTEBOOK_MB * 1e6 * 0.9  # the doc's whole state came that way
        assert max(states_over_pipe(a)) < 1000  # the joiner had nothing to give
        edit_cell(b_file, 1, "from the joiner")
        wait_until(lambda: "from the joiner" in cell_source(a_file, 1), what="B -> A")
        edit_cell(a_file, 2, "from the sharer")
        wait_until(lambda: "from the sharer" in cell_source(b_file, 2), what="A -> B")
        wait_until(lambda: a_file.read_bytes() == b_file.read_bytes(), what="same bytes")
        assert a.status()["daemon"]["pid"] and b.status()["daemon"]["pid"]
    finally:
        for node in (b, a):
            node.shut_down()


@pytest.fixture(scope="module")
def release_without(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("release-without-pipesync")
    return release_source(RELEASE_WITHOUT_PIPE_SYNC, folder)


@pytest.mark.slow
@pytest.mark.parametrize("old_side", ["sharer", "joiner"])
def test_a_peer_without_the_feature_still_joins_over_webrtc(
    tmp_path: Path, notebooks_dir: Path, release_without: Path, old_side: str
) -> None:
    sharer, joiner = loopback_nodes(tmp_path, "sharer", "joiner")
    old, new = (sharer, joiner) if old_side == "sharer" else (joiner, sharer)
    on_release(old, release_without)
    try:
        notebook = copy_notebook(notebooks_dir / SAMPLE, sharer.workdir / SAMPLE)
        joined = join_directly(sharer, joiner, notebook, sharer.share(notebook))
        assert joined.read_bytes() == notebook.read_bytes()
        assert states_over_pipe(new) == []  # the old daemon named no such feature
        edit_cell(joined, 3, "after an old-and-new join")
        wait_until(lambda: "after an old-and-new join" in cell_source(notebook, 3), what="J -> S")
    finally:
        for node in (joiner, sharer):
            node.shut_down()
