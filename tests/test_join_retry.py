"""A join whose only inviter could not be reached once still joins: the joiner asks again.

Seen with 50 daemons on one bridge: the sharer's rendezvous handshake timed out (a busy
machine) or the connect found no route (a lost ARP reply), and the joiner never asked that
daemon again: "No daemon offers this join code" a minute later. Here a proxy between joiner
and sharer drops the first invitation pipe before the sharer sees it.
"""

from __future__ import annotations

from pathlib import Path

from daemons import SAMPLE, copy_notebook, loopback_nodes
from mitm_proxy import MitmProxy, Relayed, rendezvous_url


class DropFirstInvitation:
    """Tamper: the first invitation pipe's opening envelope never reaches the sharer."""

    def __init__(self) -> None:
        self.dropped: int | None = None

    async def __call__(self, message: Relayed) -> bytes:
        if message.kind == "invite" and self.dropped in (None, message.pipe):
            self.dropped = message.pipe
            raise ConnectionError("dropped by the test")  # the proxy closes both sides
        return message.data


def test_join_asks_an_unreachable_inviter_again(tmp_path: Path, notebooks_dir: Path) -> None:
    a, b = loopback_nodes(tmp_path, "a", "b")
    notebook = copy_notebook(notebooks_dir / SAMPLE, a.workdir / SAMPLE)
    tamper = DropFirstInvitation()
    try:
        code = a.share(notebook)
        port = a.status()["daemon"]["rendezvous_port"]
        with MitmProxy(rendezvous_url(port), tamper) as proxy:
            b.env["P2PRTC_PEERS"] = f"127.0.0.1:{proxy.port}"
            joined = Path(b.join(code, None, "--timeout", "30")["path"])
        assert tamper.dropped is not None
        assert joined.read_bytes() == notebook.read_bytes()
        assert "trying again" in b.log()
    finally:
        for node in (b, a):
            node.shut_down()
