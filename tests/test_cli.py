"""The command line on its unhappy paths (issue 13): one line, the right exit code, at once."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Node, copy_notebook, loopback_nodes, process_alive, wait_until

from p2prtc.daemon.main import SHUTDOWN_BOUND_S

SAMPLE = "02.02-The-Basics-Of-NumPy-Arrays.ipynb"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    (node,) = loopback_nodes(tmp_path, "a")
    node.env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    try:
        yield node
    finally:
        node.shut_down()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["share", "x.ipynb", "--uses", "0"], "Invalid value for '--uses'"),
        (["invite", "x.ipynb", "--words", "99"], "Invalid value for '--words'"),
        (["share", "x.ipynb", "--expires", "0"], "Invalid value for '--expires'"),
        (["share"], "Missing argument 'PATH'"),
        (["bogus"], "No such command 'bogus'"),
    ],
)
def test_usage_errors_are_one_line_and_start_nothing(
    node: Node, args: list[str], message: str
) -> None:
    result = node.run(*args, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("p2prtc: ") and message in line and line.endswith(" -h)")
    assert not (node.home / "daemon.log").exists()


def test_help_answers_to_h(node: Node) -> None:
    for args in (["-h"], ["share", "-h"], ["service", "-h"]):
        result = node.run(*args)
        assert result.stdout.startswith("Usage: p2prtc")


def test_json_commands_print_a_json_error_too(node: Node) -> None:
    result = node.run("status", "--json", check=False)
    assert result.returncode == 3
    assert json.loads(result.stdout) == {
        "error": {
            "exit_code": 3,
            "kind": "DaemonNotRunning",
            "message": "The p2prtc daemon is not running.",
        }
    }
    assert result.stderr == "p2prtc: The p2prtc daemon is not running.\n"


def test_start_and_stop_are_idempotent_and_logs_shows_the_daemon(node: Node) -> None:
    assert node.run("stop").stdout == "no daemon was running\n"
    first = node.json("start")["pid"]
    assert node.json("start")["pid"] == first
    assert "started" in node.run("logs", "-n", "5").stdout
    assert node.run("stop").stdout == "daemon stopped\n"


def test_logs_without_a_daemon_yet_says_so(node: Node) -> None:
    result = node.run("logs", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("p2prtc: The daemon has not written a log in this home yet.")


def test_service_install_writes_a_unit_for_this_home_and_uninstall_removes_it(
    node: Node,
) -> None:
    installed = node.run("service", "install", "--no-start").stdout
    (unit,) = (Path(node.env["XDG_CONFIG_HOME"]) / "systemd" / "user").glob("p2prtc*.service")
    assert f"wrote {unit}" in installed
    assert "run: systemctl --user enable --now" in installed
    text = unit.read_text()
    assert f"Environment=P2PRTC_HOME={node.home.resolve()}" in text
    assert "-m p2prtc daemon" in text and "WantedBy=default.target" in text
    node.run("service", "uninstall")
    assert not unit.exists()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(node: Node, shell: str) -> None:
    assert "_P2PRTC_COMPLETE" in node.run("completion", shell).stdout


def test_a_daemon_with_many_shares_ends_on_sigterm(node: Node, notebooks_dir: Path) -> None:
    """Issue 13: one such daemon logged "daemon stopped" and stayed alive; a stop now ends
    the process within a bound whatever hangs in the shutdown."""
    for number in range(20):
        notebook = copy_notebook(notebooks_dir / SAMPLE, node.workdir / f"nb{number}.ipynb")
        node.share(notebook)
    pid = node.pid()
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not process_alive(pid), SHUTDOWN_BOUND_S + 20, "the daemon to exit")
    assert "daemon stopped" in (node.home / "daemon.log").read_text()
