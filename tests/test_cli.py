"""The command line on its unhappy paths (issue 13): one line, the right exit code, at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import SAMPLE, Node, copy_notebook, loopback_nodes, process_alive, wait_until
from joins import DEAD_CODES, Sharer, first_steps, steps_of
from mitm_proxy import MitmProxy, rendezvous_url
from signaling_server import free_port

from p2prtc.control import SHUTDOWN_BOUND_S


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


def test_stop_returns_once_the_daemon_has_exited_and_start_then_works(
    node: Node, notebooks_dir: Path
) -> None:
    """`stop` used to return while the daemon still shut down (closing its links can take
    seconds): a `start` right after found the home taken, its daemon quit, and it failed."""
    for number in range(5):  # shares, so the shutdown has some work
        node.share(copy_notebook(notebooks_dir / SAMPLE, node.workdir / f"nb{number}.ipynb"))
    first = node.pid()

    assert node.run("stop").stdout == "daemon stopped\n"

    assert not process_alive(first)
    assert node.json("start")["pid"] != first


def test_start_waits_for_a_daemon_still_exiting(node: Node) -> None:
    """A process that holds the home's lock, as a daemon does until it has exited (a
    stand-in: a real daemon's shutdown is rarely slow enough to test): `start` waits for it
    to go, then starts the daemon."""
    node.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(node.home / "daemon.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        pid = node.json("start")["pid"]
        assert holder.poll() == 0  # gone before the daemon could start
    finally:
        holder.kill()
        holder.wait()
    assert process_alive(pid)


HOLD_LOCK = """
import fcntl, sys, time
lock = open(sys.argv[1], "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(2)
"""


def test_a_daemon_in_the_foreground_logs_where_it_runs_and_to_its_log(node: Node) -> None:
    foreground = subprocess.Popen(
        node.command("daemon"),
        cwd=node.workdir,
        env=node.full_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: " started: " in node.log(), what="the daemon's start in its log")
    finally:
        node.run("stop")
        _, shown = foreground.communicate(timeout=30)
    assert " started: " in shown and "daemon stopped" in shown


def test_a_daemon_started_by_the_cli_logs_each_line_once(node: Node) -> None:
    node.run("start")
    node.run("stop")
    started = [line for line in node.log().splitlines() if " started: " in line]
    assert len(started) == 1, node.log()


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


# --- join: what it shows, and codes that cannot work ---------------------------------------


@pytest.fixture(scope="module")
def sharer(tmp_path_factory: pytest.TempPathFactory, notebooks_dir: Path) -> Iterator[Sharer]:
    (node,) = loopback_nodes(tmp_path_factory.mktemp("sharer"), "a")
    notebook = copy_notebook(notebooks_dir / SAMPLE, node.workdir / "analysis.ipynb")
    try:
        node.share(notebook)
        yield Sharer(node, notebook)
    finally:
        node.shut_down()


@pytest.fixture
def joiner(sharer: Sharer, tmp_path: Path) -> Iterator[Node]:
    node = sharer.joiner(tmp_path, "b")
    try:
        yield node
    finally:
        node.shut_down()


def test_join_tells_each_step_in_plain_lines_when_piped(sharer: Sharer, joiner: Node) -> None:
    result = joiner.run("join", sharer.invite())

    dest = joiner.workdir / sharer.notebook.name
    steps = steps_of(result.stdout.splitlines())
    assert steps[:4] == first_steps(sharer.port, "analysis.ipynb", dest)
    # The notebook came over the rendezvous pipe (protocol.md 5.3), before any WebRTC link.
    assert steps[4].startswith("connected to member ")
    assert steps[4].endswith(" via rendezvous pipe")
    assert steps[5:] == [f"joined: {dest} (28.2 kB, synced)"]
    assert dest.read_bytes() == sharer.notebook.read_bytes()
    assert result.stderr == ""


def test_join_with_json_prints_the_answer_alone(sharer: Sharer, joiner: Node) -> None:
    answer = joiner.join(sharer.invite())
    assert set(answer) == {"path", "share_id", "bytes", "adopted", "seconds"}


@pytest.mark.parametrize("cause", sorted(DEAD_CODES))
def test_a_dead_code_fails_at_once_with_its_cause(
    sharer: Sharer, joiner: Node, tmp_path: Path, cause: str
) -> None:
    """The sharer's daemon says why; the join ends with that cause, not after its timeout
    (the default 60 s; scripts/bench_dead_code.py times it)."""
    code, message = DEAD_CODES[cause](sharer, tmp_path)

    result = joiner.run("join", code, check=False)

    assert (result.returncode, result.stderr.strip()) == (4, message)
    assert f"found a daemon at 127.0.0.1:{sharer.port}: asking it for the code" in (
        result.stdout.splitlines()
    )
    assert joiner.status()["shares"] == []
    assert not (joiner.workdir / sharer.notebook.name).exists()


def test_no_daemon_found_says_what_was_tried_and_what_would_help(node: Node) -> None:
    node.env["P2PRTC_PEERS"] = "127.0.0.1:9"  # nothing listens there (discard)

    result = node.run("join", "7-guitar-tornado", "--timeout", "1", check=False)

    assert result.returncode == 4
    (line,) = result.stderr.splitlines()
    assert line.startswith("p2prtc: No daemon offering this join code was found (tried for 1 s:")
    assert "mDNS off; relays: none; peers: 127.0.0.1:9; 127.0.0.1:9: " in line
    assert line.endswith(
        "hint: from another network, both daemons need the same relay:"
        " p2prtc stop, then p2prtc --signal URL join CODE)"
    )


def test_a_daemon_not_reachable_yet_is_asked_again(sharer: Sharer, joiner: Node) -> None:
    """The address the joiner was given answers only after its first try (a daemon still
    starting, a network coming up): the join goes on and succeeds."""
    port = free_port()
    joiner.env["P2PRTC_PEERS"] = f"127.0.0.1:{port}"
    code = sharer.invite()
    join = subprocess.Popen(
        joiner.command("join", code, "--json"),
        cwd=joiner.workdir,
        env=joiner.full_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        refused = f"redeeming at 127.0.0.1:{port}: Could not reach the other daemon"
        wait_until(lambda: refused in joiner.log(), 60, "a first try that found nobody")
        # Now something answers there: a relay to the sharer's rendezvous listener.
        with MitmProxy(rendezvous_url(sharer.port), port=port):
            stdout, stderr = join.communicate(timeout=60)
    finally:
        join.kill()
    assert join.returncode == 0, stderr
    assert json.loads(stdout)["path"] == str(joiner.workdir / sharer.notebook.name)


# Runs the CLI as `python -m p2prtc ARGS` would and prints, on exit, which modules of the
# daemon package it loaded.
_REPORT_DAEMON_MODULES = """
import atexit, runpy, sys
atexit.register(lambda: print(
    "daemon modules:", sorted(m for m in sys.modules if m.startswith("p2prtc.daemon")),
    file=sys.stderr,
))
sys.argv = ["p2prtc", *sys.argv[1:]]
runpy.run_module("p2prtc", run_name="__main__")
"""


def test_the_cli_talks_to_a_running_daemon_without_importing_the_daemon(node: Node) -> None:
    """A command's own start is part of every wait (docs/benchmarks.md): the control client
    imports nothing of the daemon package, unless the environment names daemon settings to
    compare with the running daemon's."""
    node.run("start")
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PRTC_")}
    env["P2PRTC_HOME"] = str(node.home)
    for args in (["status"], ["join", "7-guitar-tornado", "--timeout", "0.3"], ["--version"]):
        result = subprocess.run(
            [sys.executable, "-c", _REPORT_DAEMON_MODULES, *args],
            cwd=node.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == (4 if args[0] == "join" else 0), result.stderr
        assert "daemon modules: []" in result.stderr, (args, result.stderr)
