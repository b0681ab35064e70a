"""Two daemons forced through a real TURN server (coturn) still share, join and sync.

Both daemons meet only through the signaling relay (mDNS off, no peer address) and use
relay-only ICE: their only candidates are allocations on a coturn process that the test
starts on 127.0.0.1 with a static long-term user. coturn refuses loopback peers unless
told otherwise (``--allow-loopback-peers``), because a relay to 127.x would let a client
reach the TURN host's own services; that is what this single-machine setup needs.

Skipped when ``turnserver`` is not installed (Debian package ``coturn``).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemons import SAMPLE, Node, cell_source, copy_notebook, edit_cell, wait_until
from environment import missing

TURN_USER = "p2prtc-test"
TURN_PASSWORD = "not-a-secret"
TURN_REALM = "p2prtc"
STARTUP_TIMEOUT = 15.0

pytestmark = pytest.mark.timeout(180)


@dataclass
class TurnServer:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    """A loopback port free for both UDP and TCP (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for UDP and TCP")


def stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to 127.0.0.1:port gets a Binding success response."""
    transaction = os.urandom(12)
    # RFC 5389 header: type Binding request, length 0, magic cookie, transaction id.
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, ("127.0.0.1", port))
        try:
            response = sock.recv(2048)
        except OSError:  # timeout, or ICMP port unreachable while coturn starts
            return False
    return response[:2] == b"\x01\x01" and response[8:20] == transaction


def turnserver_command(port: int, workdir: Path) -> list[str]:
    return [
        "turnserver",
        "-n",  # no configuration file: only these flags
        "--verbose",  # logs sessions and allocations, which the test checks
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        "--lt-cred-mech",
        f"--user={TURN_USER}:{TURN_PASSWORD}",
        f"--realm={TURN_REALM}",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",  # the telnet CLI would listen on a fixed port
        "--no-rfc5780",  # no second listening port for NAT behaviour discovery
        f"--userdb={workdir / 'turndb'}",  # not /var/lib/turn
        f"--pidfile={workdir / 'turnserver.pid'}",
        f"--log-file={workdir / 'turnserver.log'}",
        "--simple-log",  # exactly that file name, no date suffix or rollover
        "--no-stdout-log",
    ]


@pytest.fixture
def turn_server(tmp_path: Path) -> Iterator[TurnServer]:
    """A coturn process on 127.0.0.1 with one static user; yields its turn: URL."""
    if shutil.which("turnserver") is None:
        missing("coturn's turnserver is not installed (apt-get install coturn)")
    workdir = tmp_path / "turn"
    workdir.mkdir()
    port = free_port()
    log_path = workdir / "turnserver.log"
    process = subprocess.Popen(
        turnserver_command(port, workdir),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not stun_answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                missing(f"coturn did not start:\n{log_path.read_text(errors='replace')}")
        yield TurnServer(f"turn:127.0.0.1:{port}?transport=udp", log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def relay_only_env(signaling_url: str, turn_url: str) -> dict[str, str]:
    return {
        "P2PRTC_INTERFACES": "127.0.0.1",
        "P2PRTC_MDNS": "0",
        "P2PRTC_SIGNAL": signaling_url,
        "P2PRTC_ICE_SERVERS": turn_url,
        "P2PRTC_TURN_USERNAME": TURN_USER,
        "P2PRTC_TURN_CREDENTIAL": TURN_PASSWORD,
        "P2PRTC_RELAY_ONLY": "1",
    }


def peer_path_types(node: Node) -> list[str | None]:
    (share,) = node.status()["shares"]
    return [peer["path_type"] for peer in share["peers"]]


def test_share_join_and_sync_through_turn_relay(
    tmp_path: Path, notebooks_dir: Path, turn_server: TurnServer, signaling_server: str
) -> None:
    env = relay_only_env(signaling_server, turn_server.url)
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(Node(tmp_path / name / "home", tmp_path / name, dict(env)))
    a, b = nodes
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / "relayed.ipynb")
    try:
        code = a.share(notebook)
        joined = Path(b.join(code)["path"])
        assert joined.read_bytes() == notebook.read_bytes()

        edit_cell(joined, 3, "from B through TURN")
        wait_until(lambda: "from B through TURN" in cell_source(notebook, 3), what="B's edit on A")
        edit_cell(notebook, 5, "from A through TURN")
        wait_until(lambda: "from A through TURN" in cell_source(joined, 5), what="A's edit on B")

        assert peer_path_types(a) == ["relay"]
        assert peer_path_types(b) == ["relay"]
        # coturn itself saw both daemons allocate with the configured user.
        log = turn_server.log()
        assert len(re.findall(rf"new, realm=<{TURN_REALM}>, username=<{TURN_USER}>", log)) >= 2
        assert "CHANNEL_BIND processed, success" in log
    finally:
        for node in nodes:
            node.shut_down()


def test_relay_only_never_falls_back_to_a_direct_path(
    tmp_path: Path, notebooks_dir: Path, turn_server: TurnServer, signaling_server: str
) -> None:
    """With a TURN password coturn refuses, the joiner has no candidate at all.

    Both daemons could reach each other directly on 127.0.0.1 (their interface), so a
    sync here would mean relay-only leaked a host candidate.
    """
    env = relay_only_env(signaling_server, turn_server.url)
    a = Node(tmp_path / "a" / "home", tmp_path, dict(env))
    b = Node(tmp_path / "b" / "home", tmp_path, {**env, "P2PRTC_TURN_CREDENTIAL": "wrong"})
    notebook = copy_notebook(notebooks_dir / SAMPLE, tmp_path / "relayed.ipynb")
    dest = tmp_path / "joined.ipynb"
    try:
        code = a.share(notebook)
        result = b.run("join", code, str(dest), "--timeout", "4", check=False)
        assert result.returncode != 0
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not dest.exists()
        # B got past the code (it holds the share, still joining): only the link failed.
        assert peer_path_types(b) == []
        assert peer_path_types(a) == []
        assert f"user {TURN_USER} credentials are incorrect" in turn_server.log()
    finally:
        for node in (a, b):
            node.shut_down()
