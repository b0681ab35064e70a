"""Each user-facing error reaches the shell with the exit code it carries (docs/cli.md).

Errors raised inside the daemon travel over the control socket with their exit code; errors
of the CLI itself (a mistyped code) carry theirs directly. A real daemon on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import SAMPLE, Node, copy_notebook, loopback_nodes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Node]:
    (a,) = loopback_nodes(tmp_path_factory.mktemp("exit"), "a")
    try:
        a.share(copy_notebook(notebooks_dir / SAMPLE, a.workdir / "shared.ipynb"))
        yield a
    finally:
        a.shut_down()


def fails_with(node: Node, *args: str) -> tuple[int, str]:
    result = node.run(*args, check=False)
    return result.returncode, result.stderr.strip()


def test_the_path_not_shared_exits_7(node: Node) -> None:
    other = node.workdir / "other.ipynb"
    assert fails_with(node, "leave", str(other)) == (
        7,
        f"p2prtc: This file is not shared by this daemon. ({other})",
    )
    assert fails_with(node, "members", str(other))[0] == 7


def test_sharing_twice_gives_a_fresh_code_and_removing_nobody_exits_7(node: Node) -> None:
    shared = node.workdir / "shared.ipynb"
    again = node.json("share", str(shared))
    assert again["already_shared"] is True and again["path"] == str(shared)
    (share,) = node.status()["shares"]
    assert again["code"].split("-")[0] in [i["nameplate"] for i in share["invitations"]]
    assert fails_with(node, "remove", str(shared), "ffff")[0] == 7


def test_an_invalid_notebook_exits_6(node: Node) -> None:
    broken = node.workdir / "broken.ipynb"
    broken.write_text('{"cells": [')
    code, message = fails_with(node, "share", str(broken))
    assert code == 6 and message.startswith("p2prtc: "), message
    assert [s["path"] for s in node.status()["shares"]] == [str(node.workdir / "shared.ipynb")]


def test_a_hidden_notebook_is_refused_before_joiners_would_refuse_it(node: Node) -> None:
    hidden = copy_notebook(node.workdir / "shared.ipynb", node.workdir / ".hidden.ipynb")
    code, message = fails_with(node, "share", str(hidden))
    assert code == 1
    assert message.startswith("p2prtc: Other machines would refuse this file name"), message
    assert len(node.status()["shares"]) == 1


def test_a_mistyped_code_exits_4_before_any_daemon_is_asked(node: Node) -> None:
    code, message = fails_with(node, "join", "7-notaword-guitar")
    assert code == 4 and message.startswith("p2prtc: The join code is not valid"), message


def test_no_daemon_exits_3(tmp_path: Path) -> None:
    (idle,) = loopback_nodes(tmp_path, "idle")
    assert fails_with(idle, "status") == (3, "p2prtc: The p2prtc daemon is not running.")


def test_a_daemon_told_to_listen_on_an_address_this_machine_lacks_says_so(
    tmp_path: Path,
) -> None:
    (lost,) = loopback_nodes(tmp_path, "lost")
    lost.env["P2PRTC_INTERFACES"] = "192.0.2.1"  # TEST-NET-1: never an address of this machine

    code, message = fails_with(lost, "daemon")

    assert code == 1
    assert message.startswith(
        "p2prtc: Could not listen for other daemons (are P2PRTC_INTERFACES and P2PRTC_PORT"
        " right?) (192.0.2.1:0: "
    )
