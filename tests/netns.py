"""Test-created network namespaces on a private bridge: separate "machines" on one host.

`NetnsLab(count)` builds, inside namespaces that only the test owns:

    hub namespace:   br0 (bridge, multicast snooping off) + one veth end per node
    node namespace:  lo (up, multicast on) + veth0 with 10.77.0.<k>/24 (nodes[k - 1])

The bridge lives in its own hub namespace, so the root namespace gets no interface,
address or route: nothing a test does there can reach the machine's real network.
IPv6 address generation is off on every veth, so nodes speak IPv4 only (no link-local
chatter, no DAD delay). Each lab has random namespace names, so labs may run in parallel.

Use it as a context manager; it skips the test (with the reason) when not root, when `ip`
is missing or when the kernel refuses namespaces. On exit, agents started with
`spawn_agent` are killed and every namespace is deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest

from tests.environment import missing

SUBNET_PREFIX = "10.77.0"
PREFIX_LENGTH = 24
NODE_INTERFACE = "veth0"
REPO_ROOT = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT = 30.0
EXPECT_TIMEOUT = 15.0


@dataclass(frozen=True)
class Node:
    """One simulated machine: a namespace with one address on the lab's LAN."""

    namespace: str
    address: str
    interface: str = NODE_INTERFACE


def netns_unavailable_reason() -> str | None:
    """Why namespaces cannot be created here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    if shutil.which("ip") is None:
        return "network namespace tests need iproute2's `ip`"
    return None


def _ip(arguments: str) -> None:
    """Run `ip <arguments>` (names here never contain spaces); raise with its stderr."""
    result = subprocess.run(
        ["ip", *arguments.split()],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {arguments}: {result.stderr.strip()}")


class NetnsLab:
    """`count` namespaces joined by a bridge in a hub namespace (see module docstring)."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 250:
            raise ValueError("a lab has 1 to 250 nodes")
        tag = secrets.token_hex(3)
        self.hub = f"p2prtc-{tag}-hub"
        self.nodes = [
            Node(namespace=f"p2prtc-{tag}-n{i + 1}", address=f"{SUBNET_PREFIX}.{i + 1}")
            for i in range(count)
        ]
        self._created: list[str] = []
        self._processes: list[subprocess.Popen[str]] = []
        self._files = contextlib.ExitStack()

    def __enter__(self) -> NetnsLab:
        reason = netns_unavailable_reason()
        if reason is not None:
            missing(reason)
        try:
            self._add_namespace(self.hub)
        except RuntimeError as exc:
            self.close()
            missing(f"cannot create network namespaces: {exc}")
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _ip(f"netns add {name}")
        self._created.append(name)
        _ip(f"-n {name} link set lo up")

    def _build(self) -> None:
        _ip(f"-n {self.hub} link add br0 type bridge mcast_snooping 0")
        _ip(f"-n {self.hub} link set br0 addrgenmode none up")
        for index, node in enumerate(self.nodes, start=1):
            self._add_node(index, node)

    def _add_node(self, index: int, node: Node) -> None:
        ns, interface, hub_end = node.namespace, node.interface, f"v{index}"
        self._add_namespace(ns)
        # Created inside the hub with its peer moved straight into the node: the pair
        # never exists in the root namespace, even for a moment.
        _ip(f"-n {self.hub} link add {hub_end} type veth peer name {interface} netns {ns}")
        _ip(f"-n {self.hub} link set {hub_end} addrgenmode none")
        _ip(f"-n {self.hub} link set {hub_end} master br0 up")
        _ip(f"-n {ns} link set lo multicast on")
        _ip(f"-n {ns} link set {interface} addrgenmode none")
        _ip(f"-n {ns} addr add {node.address}/{PREFIX_LENGTH} dev {interface}")
        _ip(f"-n {ns} link set {interface} up")

    def stop_multicast_to(self, node: Node) -> None:
        """The bridge no longer floods multicast to `node` (mDNS announcements and questions
        are lost on their way to it); unicast still reaches it."""
        hub_end = f"v{self.nodes.index(node) + 1}"  # as `_add_node` names it
        _ip(f"-n {self.hub} link set {hub_end} type bridge_slave mcast_flood off")

    def set_address(self, node: Node, *, present: bool) -> None:
        """Take `node`'s LAN address away, or give it back (as DHCP would)."""
        verb = "add" if present else "del"
        _ip(f"-n {node.namespace} addr {verb} {node.address}/{PREFIX_LENGTH} dev {node.interface}")

    def command(self, node: Node, argv: list[str]) -> list[str]:
        """The argv that runs `argv` inside `node`'s namespace."""
        return ["ip", "netns", "exec", node.namespace, *argv]

    def run(self, node: Node, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside `node`; raise if it fails."""
        return subprocess.run(
            self.command(node, argv),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=True,
        )

    def spawn_agent(self, node: Node, args: list[str]) -> Agent:
        """Start this venv's python with `args` inside `node` (repo importable), as an
        agent that speaks JSON lines on stdin/stdout; it is killed when the lab closes."""
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        # stderr goes to a file (closed with the lab): a chatty agent must not block on a
        # full pipe.
        stderr = self._files.enter_context(tempfile.TemporaryFile(mode="w+"))  # noqa: SIM115
        process = subprocess.Popen(
            self.command(node, [sys.executable, *args]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        self._processes.append(process)
        return Agent(process, stderr)

    def close(self) -> None:
        """Kill spawned processes, then delete every namespace (and so every veth/bridge)."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
            process.wait(COMMAND_TIMEOUT)
        self._processes.clear()
        self._files.close()
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._created.clear()


class Agent:
    """A process exchanging one JSON object per line: `send()` to its stdin, `expect()`
    from its stdout (read by a thread, so waiting has a deadline)."""

    def __init__(self, process: subprocess.Popen[str], stderr: IO[str]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stderr = stderr
        self._stdin = process.stdin
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stdout: Any) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        self._stdin.write(json.dumps(message) + "\n")
        self._stdin.flush()

    def expect(
        self,
        matches: Callable[[dict[str, Any]], bool] = lambda _: True,
        timeout: float = EXPECT_TIMEOUT,
    ) -> dict[str, Any]:
        """The next message that `matches`, skipping others; fails the test on timeout or
        when the agent exits (showing its stderr)."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"agent sent no matching message within {timeout:g} s")
            if line is None:
                pytest.fail(f"agent exited: {self._stderr_tail()}")
            message: dict[str, Any] = json.loads(line)
            if matches(message):
                return message

    def wait(self, timeout: float = EXPECT_TIMEOUT) -> int:
        """Close its stdin (the agents' signal to finish) and wait for its exit status."""
        self._stdin.close()
        return self._process.wait(timeout)

    def _stderr_tail(self) -> str:
        self._process.wait(COMMAND_TIMEOUT)
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]
