"""The CLI <-> daemon control protocol over a real unix socket, and the home's paths."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2prtc import control, paths
from p2prtc.control import DaemonError, DaemonNotRunning, DaemonTimeout
from p2prtc.daemon.control import ControlServer, DaemonAlreadyRunning, Report
from p2prtc.errors import ExitCode, P2PError

pytestmark = pytest.mark.timeout(20)


class WrongCode(P2PError):
    """The join code is wrong."""

    exit_code = ExitCode.CODE_REFUSED


class Daemon:
    """A trivial handler: echo, fail on demand, or wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def handle(self, request: dict[str, Any], report: Report) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "count":
            for number in range(int(request["to"])):
                report({"number": number})
            return {"counted": True}
        if cmd == "echo":
            return {"echo": request.get("value")}
        if cmd == "wrong-code":
            raise WrongCode()
        if cmd == "bug":
            empty: dict[str, int] = {}
            return {"value": empty["missing"]}
        if cmd == "not-json":
            return {"value": object()}
        if cmd == "wait":
            self.waiting.set()
            await self.release.wait()
            return {"waited": True}
        raise ValueError(f"unknown command\n{cmd}")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir, so socket paths stay under the AF_UNIX limit whatever the test name."""
    folder = Path(tempfile.mkdtemp(prefix="p2p"))
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
async def daemon(short_tmp: Path) -> AsyncIterator[tuple[Path, Daemon, ControlServer]]:
    home = short_tmp
    fake = Daemon()
    server = ControlServer(paths.control_socket(home), fake.handle)
    await server.start()
    yield home, fake, server
    fake.release.set()
    await server.close()


async def call(home: Path, request: dict[str, Any], timeout: float | None = 10.0) -> Any:
    # The client is synchronous (it runs in click commands): keep it off the event loop.
    return await asyncio.to_thread(control.call, home, request, timeout)


def raw_exchange(socket_path: Path, lines: list[bytes]) -> list[bytes]:
    """Send raw lines on one connection, read one answer line per request line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(b"".join(lines))
        reader = sock.makefile("rb")
        return [reader.readline() for _ in lines]


async def test_request_and_answer(daemon: tuple[Path, Daemon, ControlServer]) -> None:
    home, _, _ = daemon
    assert await call(home, {"cmd": "echo", "value": [1, "ü"]}) == {"ok": True, "echo": [1, "ü"]}


async def test_progress_events_come_before_the_answer_only_when_asked(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, _, server = daemon
    events: list[dict[str, Any]] = []
    request = {"cmd": "count", "to": 3}
    answer = await asyncio.to_thread(control.call, home, request, 10, events.append)
    assert answer == {"ok": True, "counted": True}
    assert events == [{"number": 0}, {"number": 1}, {"number": 2}]
    # A client that did not ask (an older CLI) gets the answer line alone.
    (line,) = await asyncio.to_thread(raw_exchange, server.path, [b'{"cmd":"count","to":2}\n'])
    assert json.loads(line) == {"ok": True, "counted": True}


async def test_user_error_keeps_message_and_kind(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, _, _ = daemon
    with pytest.raises(DaemonError) as caught:
        await call(home, {"cmd": "wrong-code"})
    assert str(caught.value) == "The join code is wrong."
    assert caught.value.kind == "WrongCode"
    assert caught.value.exit_code == ExitCode.CODE_REFUSED


@pytest.mark.parametrize("cmd", ["bug", "not-json", "unknown"])
async def test_handler_failure_is_an_answer_not_a_crash(
    daemon: tuple[Path, Daemon, ControlServer], cmd: str
) -> None:
    home, _, _ = daemon
    with pytest.raises(DaemonError) as caught:
        await call(home, {"cmd": cmd})
    assert "\n" not in str(caught.value)
    assert "internal error" in str(caught.value)
    assert caught.value.kind in {"KeyError", "TypeError", "ValueError"}
    assert caught.value.exit_code == ExitCode.ERROR
    assert await call(home, {"cmd": "echo", "value": 1}) == {"ok": True, "echo": 1}


async def test_malformed_lines_get_error_answers_on_the_same_connection(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    _, _, server = daemon
    requests = [b"not json\n", b"[1, 2]\n", b'{"value": 1}\n', b"\xff\xfe\n", b'{"cmd":"echo"}\n']
    answers = await asyncio.to_thread(raw_exchange, server.path, requests)
    decoded = [json.loads(answer) for answer in answers]
    assert [answer["kind"] for answer in decoded[:4]] == ["ProtocolError"] * 4
    assert all(answer["ok"] is False for answer in decoded[:4])
    assert decoded[4] == {"ok": True, "echo": None}


def send_oversized_request(socket_path: Path) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"x" * (control.MAX_LINE + 65536))
        return sock.makefile("rb").readline()


async def test_oversized_request_is_refused_and_server_carries_on(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, _, server = daemon
    answer = json.loads(await asyncio.to_thread(send_oversized_request, server.path))
    assert (answer["ok"], answer["kind"]) == (False, "ProtocolError")
    assert "too long" in answer["error"]
    assert await call(home, {"cmd": "echo", "value": 5}) == {"ok": True, "echo": 5}


async def test_long_request_does_not_block_others_and_timeout_is_settable(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, fake, _ = daemon
    joining = asyncio.ensure_future(call(home, {"cmd": "wait"}, timeout=None))
    await fake.waiting.wait()
    assert await call(home, {"cmd": "echo", "value": "meanwhile"}) == {
        "ok": True,
        "echo": "meanwhile",
    }
    with pytest.raises(DaemonTimeout):
        await call(home, {"cmd": "wait"}, timeout=0.2)
    fake.release.set()
    assert await joining == {"ok": True, "waited": True}


async def test_closing_answers_pending_requests_and_removes_socket(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, fake, server = daemon
    pending = asyncio.ensure_future(call(home, {"cmd": "wait"}))
    await fake.waiting.wait()
    await server.close()
    with pytest.raises(DaemonError) as caught:
        await pending
    assert caught.value.kind == "DaemonShuttingDown"
    assert not server.path.exists()
    with pytest.raises(DaemonNotRunning):
        await call(home, {"cmd": "echo"})


async def test_socket_is_owner_only(daemon: tuple[Path, Daemon, ControlServer]) -> None:
    _, _, server = daemon
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600


def test_no_daemon_means_not_running(short_tmp: Path) -> None:
    with pytest.raises(DaemonNotRunning) as caught:
        control.call(short_tmp, {"cmd": "status"})
    assert str(caught.value) == "The p2prtc daemon is not running."


def leave_stale_socket(path: Path) -> None:
    """What a killed daemon leaves behind: a socket file nobody listens on."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


async def test_stale_socket_is_not_running_then_replaced(short_tmp: Path) -> None:
    path = paths.control_socket(short_tmp)
    leave_stale_socket(path)
    with pytest.raises(DaemonNotRunning):
        await call(short_tmp, {"cmd": "echo"})
    server = ControlServer(path, Daemon().handle)
    await server.start()
    try:
        assert await call(short_tmp, {"cmd": "echo", "value": 2}) == {"ok": True, "echo": 2}
    finally:
        await server.close()


async def test_second_server_on_a_live_socket_is_refused(
    daemon: tuple[Path, Daemon, ControlServer],
) -> None:
    home, _, server = daemon
    with pytest.raises(DaemonAlreadyRunning):
        await ControlServer(server.path, Daemon().handle).start()
    assert await call(home, {"cmd": "echo", "value": 3}) == {"ok": True, "echo": 3}


async def test_deep_home_uses_the_short_socket_fallback(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    home = short_tmp / ("deep" * 30)
    home.mkdir()
    path = paths.control_socket(home)
    assert path.parent == short_tmp / f"p2prtc-{os.getuid()}"
    server = ControlServer(path, Daemon().handle)
    await server.start()
    try:
        assert await call(home, {"cmd": "echo", "value": 4}) == {"ok": True, "echo": 4}
    finally:
        await server.close()


# --- paths --------------------------------------------------------------------------------


def test_home_from_env_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("P2PRTC_HOME", "a/home")
    home = paths.home()
    assert home == tmp_path.resolve() / "a" / "home"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_home_defaults_to_user_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("P2PRTC_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert paths.home() == tmp_path.resolve() / "p2prtc"


def test_socket_paths_differ_per_home_and_fit_af_unix(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    short = short_tmp / "home"
    deep_a, deep_b = short_tmp / ("a" * 120), short_tmp / ("b" * 120)
    assert paths.control_socket(short) == short / "control.sock"
    assert paths.control_socket(deep_a) == paths.control_socket(deep_a)
    assert paths.control_socket(deep_a) != paths.control_socket(deep_b)
    assert len(os.fsencode(paths.control_socket(deep_a))) < 104
    folder = paths.control_socket(deep_a).parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_shared_socket_folder_is_refused(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    folder = short_tmp / f"p2prtc-{os.getuid()}"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(paths.UnsafeSocketFolder):
        paths.control_socket(short_tmp / ("a" * 120))


def test_write_private_is_0600_and_replaces(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        target = paths.keys_file(tmp_path)
        paths.write_private(target, b"first")
        paths.write_private(target, b"second")
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_shares_dir_is_private(tmp_path: Path) -> None:
    shares = paths.shares_dir(tmp_path)
    assert shares.is_dir()
    assert stat.S_IMODE(shares.stat().st_mode) == 0o700
