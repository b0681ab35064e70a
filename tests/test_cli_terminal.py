"""What a user sees on a terminal: `p2prtc join` and `p2prtc status` typed into a real tmux
pane (a pseudo-terminal, so the CLI takes its terminal paths), read back as the screen shows
them. Two loopback daemons (no mDNS, ICE on 127.0.0.1); tmux runs on its own socket."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Node, copy_notebook, loopback_nodes, wait_until
from environment import missing
from joins import first_steps, steps_of

pytestmark = pytest.mark.timeout(120)

BIG = "kmeans.ipynb"  # 1.8 MB: its state comes in many chunks


class Terminal:
    """A tmux session running a shell in a 160x50 pane."""

    def __init__(self, socket: Path, workdir: Path, env: dict[str, str]) -> None:
        self._tmux = ["tmux", "-S", str(socket)]
        self._commands = 0
        settings = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
        self._run(
            "new-session", "-d", "-x", "160", "-y", "50", "-c", str(workdir), *settings,
            "bash --norc --noprofile",
        )  # fmt: skip

    def _run(self, *args: str) -> str:
        return subprocess.run(
            [*self._tmux, *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self._run("capture-pane", "-p").splitlines()]

    def output_of(self, command: list[str], timeout: float = 60) -> tuple[list[str], str]:
        """What ``command`` printed on the screen, and its exit status: typed at the prompt
        on a cleared screen between two marker lines of its own."""
        self._commands += 1
        begin, end = f"BEGIN-{self._commands}", f"EXIT-{self._commands}="
        typed = f"clear; echo {begin}; {shlex.join(command)}; echo {end}$?"
        self._run("send-keys", typed, "Enter")
        wait_until(lambda: any(line.startswith(end) for line in self.screen()), timeout)
        lines = self.screen()
        first = lines.index(begin) + 1
        last = next(i for i, line in enumerate(lines) if line.startswith(end))
        return lines[first:last], lines[last].removeprefix(end)

    def close(self) -> None:
        subprocess.run([*self._tmux, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal_pair(tmp_path: Path, notebooks_dir: Path) -> Iterator[tuple[Node, Node, Path]]:
    if shutil.which("tmux") is None:
        missing("tmux is not installed")
    a, b = loopback_nodes(tmp_path, "a", "b")
    notebook = copy_notebook(notebooks_dir / BIG, a.workdir / "kmeans.ipynb")
    try:
        yield a, b, notebook
    finally:
        for node in (b, a):
            node.shut_down()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short folder for tmux's socket (unix socket paths are short)."""
    folder = Path(tempfile.mkdtemp(prefix="tmux"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_terminal_user_sees_the_join_step_by_step_and_then_the_status(
    terminal_pair: tuple[Node, Node, Path], socket_dir: Path
) -> None:
    a, b, notebook = terminal_pair
    code = a.share(notebook)
    port = a.status()["daemon"]["rendezvous_port"]
    b.env["P2PRTC_PEERS"] = f"127.0.0.1:{port}"
    terminal = Terminal(socket_dir / "sock", b.workdir, {**b.full_env(), "TERM": "xterm"})
    try:
        join_lines, status = terminal.output_of(b.command("join", code))
        assert status == "0", join_lines
        dest = b.workdir / "kmeans.ipynb"
        steps = steps_of(join_lines)
        assert steps[:4] == first_steps(port, "kmeans.ipynb", dest)
        assert steps[4].startswith("connected to member ")
        assert steps[-1] == f"joined: {dest} (1.8 MB, synced)"
        # A bar drawn in place (when the transfer outlasted a tenth of a second) ends full.
        bars = [line for line in join_lines if line.startswith("receiving the notebook")]
        assert all(line.endswith("]  100%  1.8 MB") for line in bars), bars
        assert dest.read_bytes() == notebook.read_bytes()

        wait_until(lambda: b.peers_synced(dest, 1), what="B's peer synced")
        status_lines, status = terminal.output_of(b.command("status"))
        assert status == "0", status_lines
        # What a user checks: the daemon and where it listens, the joined file active, its
        # peer synced.
        assert f"pid {b.pid()}" in status_lines[0]
        assert status_lines[1] == f"rendezvous port {b.status()['daemon']['rendezvous_port']}"
        assert status_lines[2].startswith(str(dest)) and status_lines[2].endswith(" active")
        (peer,) = [line for line in status_lines if line.startswith("  peer ")]
        (share,) = b.status()["shares"]
        assert f" {share['peers'][0]['address']} " in peer
        assert " synced via host" in peer
    finally:
        terminal.close()
