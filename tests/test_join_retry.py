"""A join whose only inviter could not be reached once still joins: the joiner asks again.

Seen with 50 daemons on one bridge: the sharer's rendezvous handshake timed out (a busy
machine) or the connect found no route (a lost ARP reply), and the joiner never asked that
daemon again: "No daemon offers this join code" a minute later. Here a proxy between joiner
and sharer drops the first invitation pipe before the sharer sees it.
"""

from __future__ import annotations

import math
from pathlib import Path

from daemons import SAMPLE, copy_notebook, loopback_nodes
from mitm_proxy import MitmProxy, Relayed, rendezvous_url

from p2prtc.adapters.rendezvous import ConnectFailed, PipeClosed
from p2prtc.daemon.endpoints import Endpoint
from p2prtc.daemon.joining import UNREACHABLE_RETRY_S, _Search
from p2prtc.daemon.pipes import BytePipe


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


async def _never_opened() -> BytePipe:
    raise AssertionError("the search rule never opens a pipe")


def test_a_broken_off_exchange_is_retried_once_an_unreachable_daemon_always() -> None:
    """Each broken-off exchange may have cost the code one of its 3 attempts: a joiner asks
    that daemon once more, never enough to burn its own code. A daemon it could not reach
    at all (nothing sent) is asked again until the deadline."""
    search = _Search(grace_s=0.0)
    inviter = Endpoint("10.0.0.1:4000", _never_opened, address="10.0.0.1:4000")
    search.answered(inviter, PipeClosed())
    assert not search.may_ask(inviter)  # after a pause
    wait_out_the_pause(search, inviter)
    assert search.may_ask(inviter)
    search.answered(inviter, TimeoutError())
    assert search_gave_up_on(search, inviter)

    starting = Endpoint("10.0.0.2:4000", _never_opened, address="10.0.0.2:4000")
    for _ in range(5):
        search.answered(starting, ConnectFailed())
        wait_out_the_pause(search, starting)
        assert search.may_ask(starting)


def wait_out_the_pause(search: _Search, endpoint: Endpoint) -> None:
    search._ask_at[endpoint.key] -= UNREACHABLE_RETRY_S  # as if the pause had passed


def search_gave_up_on(search: _Search, endpoint: Endpoint) -> bool:
    return search._ask_at[endpoint.key] == math.inf
