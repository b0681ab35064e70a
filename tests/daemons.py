"""Real p2prtc daemons for end-to-end tests: each with its own home, driven through the CLI.

``Node`` runs the ``p2prtc`` command with a given environment (and optionally inside a
network namespace via ``ip netns exec``). Nothing here mocks the daemon: tests start real
processes, which talk over real sockets, aiortc and (inside namespaces) mDNS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

P2PRTC = [sys.executable, "-m", "p2prtc"]


def write_like_jupyter(path: Path, nb: dict[str, Any]) -> None:
    """Save ``nb`` the way an editor does: a temp file renamed over the target."""
    text = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".editor-tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_notebook(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def cell_source(path: Path, index: int) -> str:
    return "".join(read_notebook(path)["cells"][index]["source"])


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError, IndexError):
            pass  # a file mid-replace or not there yet
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Node:
    """One daemon home (one "machine"), optionally inside a network namespace."""

    home: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None

    def command(self, *args: str) -> list[str]:
        argv = [*P2PRTC, *args]
        if self.namespace:
            argv = ["ip", "netns", "exec", self.namespace, *argv]
        return argv

    def full_env(self) -> dict[str, str]:
        return {**os.environ, "P2PRTC_HOME": str(self.home), **self.env}

    def run(
        self, *args: str, check: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env=self.full_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"p2prtc {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
                f"\n--- daemon log ---\n{self.log_tail()}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def share(self, path: Path, *extra: str) -> str:
        return str(self.json("share", str(path), *extra)["code"])

    def join(self, code: str, dest: Path | None = None, *extra: str) -> Any:
        args = ["join", code] + ([str(dest)] if dest else []) + list(extra)
        return self.json(*args)

    def status(self) -> Any:
        return self.json("status")

    def pid(self) -> int:
        return int(self.status()["daemon"]["pid"])

    def kill(self) -> None:
        """kill -9 the daemon: no goodbye, no flush beyond what it already made durable."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 10, "the daemon to die")

    def stop(self) -> None:
        self.run("stop", check=False, timeout=30)

    def start(self) -> None:
        """Start the daemon in the foreground mode, detached (as after a reboot)."""
        subprocess.Popen(
            self.command("daemon"),
            cwd=self.workdir,
            env=self.full_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: self.run("status", check=False).returncode == 0, 20, "daemon start")

    def log_tail(self, lines: int = 40) -> str:
        log = self.home / "daemon.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def peers_synced(self, path: Path, count: int) -> bool:
        for share in self.status()["shares"]:
            if share["path"] == str(path):
                synced = [p for p in share["peers"] if p["synced"]]
                return len(synced) >= count
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def copy_notebook(source: Path, dest: Path) -> Path:
    shutil.copyfile(source, dest)
    dest.chmod(0o644)
    return dest
