"""Daemon names and settings against a running daemon, with real loopback daemons (issue 13).

- Each daemon has a name (``p2prtc config name``): peers see it in ``status``, ``members``
  and their log lines; ids stay in the JSON. A name is checked on the way in (CLI) and
  from the network (a hostile member's name never reaches status or the log).
- A command's ``--peer`` reaches a daemon already running; a setting it cannot take
  (``--signal``...) gives one warning line with the restart that applies it.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from daemons import SAMPLE, copy_notebook, loopback_nodes, share_and_join, wait_until
from evil_peer import EvilPeer, redeem

pytestmark = pytest.mark.timeout(180)

ALICE = "alice@laptop"
BOB = "Bob's desk ✏"


def test_peers_see_each_others_names_in_status_members_and_logs(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    a.run("config", "name", ALICE)
    b.run("config", "name", BOB)
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "team.ipynb")
    try:
        b_file = share_and_join(a, b, notebook)
        a_daemon, b_daemon = a.status()["daemon"], b.status()["daemon"]
        assert (a_daemon["name"], b_daemon["name"]) == (ALICE, BOB)
        (peer,) = a.status()["shares"][0]["peers"]
        assert (peer["id"], peer["name"]) == (b_daemon["id"], BOB)

        text = a.run("status").stdout
        assert f"daemon {ALICE} [{a_daemon['id'][:8]}]" in text
        assert f"rendezvous port {a_daemon['rendezvous_port']}" in text
        assert f"peer {BOB} [{b_daemon['id'][:8]}]" in text

        members = b.json("members", str(b_file))["members"]
        assert {m["id"]: m["name"] for m in members} == {
            a_daemon["id"]: ALICE,
            b_daemon["id"]: BOB,
        }
        assert f"{a_daemon['id']}  {ALICE}  connected" in b.run("members", str(b_file)).stdout
        assert f"connected to {BOB} ({b_daemon['id']})" in a.log()

        # Known names outlive the connection: B offline, A still names it.
        b.stop()
        members = a.json("members", str(notebook))["members"]
        assert {m["name"] for m in members if not m["self"]} == {BOB}
    finally:
        for node in (a, b):
            node.shut_down()


@pytest.mark.parametrize(
    "name", ["", " padded", "two\nlines", "\x1b[2Jclear", "\u202eevil", "x" * 65, "a\u2028b"]
)
def test_a_bad_name_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    (node,) = loopback_nodes(tmp_path, "a")
    result = node.run("config", "name", name, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("p2prtc: A daemon name is 1 to 64 printable characters")
    assert len(result.stderr.splitlines()) == 1
    assert "@" in node.run("config", "name").stdout  # still the default, user@host


def test_a_new_name_while_the_daemon_runs_says_a_restart_applies_it(tmp_path: Path) -> None:
    (node,) = loopback_nodes(tmp_path, "a")
    try:
        node.run("start")
        renamed = node.run("config", "name", ALICE)
        assert renamed.stdout.strip() == ALICE
        assert "the running daemon goes by" in renamed.stderr
        assert "p2prtc stop && p2prtc start" in renamed.stderr
        node.stop()
        node.run("start")
        assert node.status()["daemon"]["name"] == ALICE
    finally:
        node.shut_down()


async def test_a_hostile_members_name_never_reaches_status_or_the_log(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    (a,) = loopback_nodes(tmp_path, "a")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "team.ipynb")
    hostile = "\x1b[2J\nfake log line"
    segment = "name=" + base64.urlsafe_b64encode(hostile.encode()).decode()
    try:
        code = await asyncio.to_thread(a.share, notebook)
        port = int((await asyncio.to_thread(a.status))["daemon"]["rendezvous_port"])
        membership = await redeem(port, code)
        evil = await EvilPeer.connect(port, membership, identity_tail=f"run/{segment}")
        try:

            def seen() -> bool:
                peers = a.status()["shares"][0]["peers"]
                return any(p["id"] == evil.daemon_id and p["connected"] for p in peers)

            await asyncio.to_thread(wait_until, seen, 20, "the hostile member connected")
            (peer,) = (await asyncio.to_thread(a.status))["shares"][0]["peers"]
            assert peer["name"] is None
            log = a.log()
            assert f"connected to {evil.daemon_id}" in log
            assert "\x1b" not in log and "fake log line" not in log
        finally:
            await evil.close()
    finally:
        await asyncio.to_thread(a.shut_down)


def test_a_peer_option_reaches_the_running_daemon(tmp_path: Path, notebooks_dir: Path) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "team.ipynb")
    try:
        code = a.share(notebook)
        b.run("start")  # without any peer: it could not find A (no mDNS on loopback)
        endpoint = f"127.0.0.1:{a.status()['daemon']['rendezvous_port']}"
        joined = b.run("--peer", endpoint, "join", code, "--json")
        assert f"the running daemon dials {endpoint} too (until it stops)" in joined.stderr
        wait_until(lambda: b.peers_synced(b.workdir / "team.ipynb", 1), what="B synced")
    finally:
        for node in (a, b):
            node.shut_down()


def test_settings_the_running_daemon_lacks_give_one_warning_with_the_restart(
    tmp_path: Path,
) -> None:
    (node,) = loopback_nodes(tmp_path, "a")
    try:
        node.run("start")
        plain = node.run("status")
        assert plain.stderr == ""  # the same settings: nothing to say
        signal = "ws://127.0.0.1:9/"
        other = node.run("--signal", signal, "status")
        assert other.returncode == 0
        (warning,) = other.stderr.splitlines()
        assert "the running daemon does not run with --signal as given here" in warning
        assert warning.endswith(f"p2prtc stop && p2prtc --signal={signal} start")
        bad = node.run("--peer", "nonsense", "status", check=False)
        assert bad.returncode == 1
        (line,) = bad.stderr.splitlines()
        assert line.endswith("(P2PRTC_PEERS entry 'nonsense' is not host:port)")
        node.env["P2PRTC_INTERFACES"] = "127.0.0.2"
        (warning,) = node.run("status").stderr.splitlines()
        assert "does not run with P2PRTC_INTERFACES as given" in warning
        assert warning.endswith("p2prtc stop && p2prtc start")
    finally:
        node.shut_down()
