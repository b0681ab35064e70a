"""Joining through the CLI: the steps ``p2prtc join`` shows, and join codes that can no
longer work, each with the one line the join must fail with.

Shared by tests/test_cli.py, tests/test_cli_terminal.py and scripts/bench_dead_code.py.
Each dead-code maker takes a running ``Sharer`` and a folder for the daemons it needs, and
returns the dead code and the expected stderr line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2prtc.core.wordlist import WORDS
from tests.daemons import Node, loopback_nodes, wait_until

WRONG = "p2prtc: The join code is wrong."
USED = "p2prtc: This join code has already been used; ask for a new one (p2prtc invite)."
EXPIRED = "p2prtc: This join code has expired; ask for a new one (p2prtc invite)."
BURNED = "p2prtc: This join code was cancelled after too many wrong attempts; ask for a new one."
UNKNOWN = (
    "p2prtc: The daemon reached does not know this join code: check it for typos,"
    " or ask for a new one (asked 127.0.0.1:{port})"
)


def first_steps(port: int, name: str, dest: Path) -> list[str]:
    """The first lines a join over a static peer at ``port`` shows, up to the welcome."""
    return [
        f"searching: mDNS off; relays: none; peers: 127.0.0.1:{port}",
        f"found a daemon at 127.0.0.1:{port}: asking it for the code",
        "verifying the code (SPAKE2)",
        f"code accepted: joining {name} as {dest}",
    ]


def steps_of(lines: list[str]) -> list[str]:
    """The step lines of a join's output: all but the transfer's."""
    return [line for line in lines if not line.startswith("receiving the notebook")]


@dataclass
class Sharer:
    """A daemon sharing a notebook; each test makes its own invitations."""

    node: Node
    notebook: Path

    @property
    def port(self) -> int:
        return int(self.node.status()["daemon"]["rendezvous_port"])

    def invite(self, *options: str) -> str:
        return str(self.node.json("invite", str(self.notebook), *options)["code"])

    def joiner(self, root: Path, name: str) -> Node:
        """A fresh home that dials this sharer directly (loopback, no mDNS)."""
        (node,) = loopback_nodes(root, name)
        node.env["P2PRTC_PEERS"] = f"127.0.0.1:{self.port}"
        return node


def used(sharer: Sharer, root: Path) -> tuple[str, str]:
    code = sharer.invite()
    first = sharer.joiner(root, "first")
    try:
        first.join(code)
    finally:
        first.shut_down()
    return code, USED


def expired(sharer: Sharer, root: Path) -> tuple[str, str]:
    code = sharer.invite("--expires", "0.01")  # minutes: 0.6 s
    nameplate = code.split("-")[0]

    def retired() -> bool:
        (share,) = sharer.node.status()["shares"]
        return any(r["nameplate"] == nameplate for r in share["retired_invitations"])

    wait_until(retired, what="the invitation to expire")
    return code, EXPIRED


def another_code(code: str) -> str:
    """The same nameplate with other words of the list: a wrong guess at ``code``."""
    nameplate, *words = code.split("-")
    other = next(word for word in WORDS if word != words[0])  # any other word: never valid
    return "-".join([nameplate, *[other] * len(words)])


def burned(sharer: Sharer, root: Path) -> tuple[str, str]:
    code = sharer.invite()
    guesser = sharer.joiner(root, "guesser")
    try:
        for _ in range(3):
            result = guesser.run("join", another_code(code), check=False)
            assert (result.returncode, result.stderr.strip()) == (4, WRONG)
    finally:
        guesser.shut_down()
    return code, BURNED


def unknown(sharer: Sharer, root: Path) -> tuple[str, str]:
    code = sharer.invite()
    return "4242-" + code.partition("-")[2], UNKNOWN.format(port=sharer.port)


def wrong(sharer: Sharer, root: Path) -> tuple[str, str]:
    return another_code(sharer.invite()), WRONG


DEAD_CODES: dict[str, Callable[[Sharer, Path], tuple[str, str]]] = {
    "used": used,
    "expired": expired,
    "burned": burned,
    "unknown": unknown,
    "wrong": wrong,
}
