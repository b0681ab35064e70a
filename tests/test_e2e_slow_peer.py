"""A peer that stops reading is dropped; the others never wait for it.

Three loopback daemons share one notebook. C's daemon is frozen (SIGSTOP: its process
exists, its sockets stay open, nothing is read or acknowledged), and A's editor saves big
outputs. What A queues for C outgrows A's bound (P2PRTC_MAX_QUEUED_BYTES, small here), so A
disconnects C; B gets every save meanwhile. Thawed, C reconnects and catches up.
"""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import (
    Node,
    copy_notebook,
    join_directly,
    loopback_nodes,
    read_notebook,
    wait_until,
    write_like_jupyter,
)

SAMPLE = "preface.ipynb"
QUEUE_BOUND = 1024 * 1024
SAVES = 12
OUTPUT_BYTES = 192 * 1024  # per save: SAVES of them are more than twice QUEUE_BOUND

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = loopback_nodes(tmp_path, "a", "b", "c")
    nodes[0].env["P2PRTC_MAX_QUEUED_BYTES"] = str(QUEUE_BOUND)
    try:
        yield nodes
    finally:
        for node in nodes:
            for pid in node.daemon_pids():
                os.kill(pid, signal.SIGCONT)
            node.shut_down()


def save_big_output(path: Path, index: int) -> str:
    """A's editor adds a code cell whose output is an incompressible image; its marker."""
    nb = read_notebook(path)
    marker = f"# run {index:02d}"
    image = base64.b64encode(os.urandom(OUTPUT_BYTES)).decode()
    cell: dict[str, object] = {
        "cell_type": "code",
        "execution_count": index,
        "metadata": {},
        "outputs": [{"data": {"image/png": image}, "metadata": {}, "output_type": "display_data"}],
        "source": [marker],
    }
    if nb["nbformat_minor"] >= 5:  # cell ids exist from nbformat 4.5 on
        cell["id"] = f"slow-{index:02d}"
    nb["cells"].append(cell)
    write_like_jupyter(path, nb)
    return marker


def holds_all(path: Path, markers: list[str]) -> bool:
    text = path.read_text()
    return all(marker in text for marker in markers)


def test_a_frozen_peer_is_dropped_and_the_others_keep_syncing(
    nodes: list[Node], tmp_path: Path, notebooks_dir: Path
) -> None:
    a, b, c = nodes
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "slow.ipynb")
    code = a.share(notebook, "--uses", "2")
    b_file, c_file = (join_directly(a, node, notebook, code) for node in (b, c))
    wait_until(lambda: a.peers_synced(notebook, 2), what="A synced with B and C")
    frozen = c.daemon_pids()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)

    markers = []
    for index in range(SAVES):
        markers.append(save_big_output(notebook, index))
        # B keeps up with every save while C is frozen (no waiting on C's queue).
        wait_until(lambda: holds_all(b_file, markers), 30, f"save {index} on B")

    wait_until(
        lambda: "disconnecting" in a.log_tail(200) and "does not keep up" in a.log_tail(200),
        30,
        f"A to drop the frozen C\n{a.log_tail()}",
    )
    assert not holds_all(c_file, markers)  # frozen: it has not read anything since

    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    wait_until(
        lambda: holds_all(c_file, markers),
        60,
        f"C to catch up\n{c.log_tail(80)}\n--- A ---\n{a.log_tail(80)}",
    )
    wait_until(
        lambda: c_file.read_bytes() == notebook.read_bytes() == b_file.read_bytes(),
        30,
        "identical files",
    )
    assert len(read_notebook(c_file)["cells"]) == len(read_notebook(notebook)["cells"])
