"""Running the daemon of one home in the foreground: its lock, its log, its signals."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from pathlib import Path

from p2prtc import paths
from p2prtc.daemon import control, files
from p2prtc.daemon.app import Daemon
from p2prtc.daemon.config import DaemonConfig


class _HomeLock:
    """One daemon per home: an exclusive lock held for the daemon's lifetime."""

    def __init__(self, home: Path) -> None:
        self._file = (home / "daemon.lock").open("a")

    def acquire(self) -> None:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise control.DaemonAlreadyRunning() from None


def _configure_logging(home: Path, level: int) -> None:
    handler = logging.FileHandler(paths.log_file(home))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aioice", "aiortc", "websockets", "zeroconf"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


async def _serve(home: Path, config: DaemonConfig) -> None:
    daemon = Daemon(home, config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    await daemon.start()
    await daemon.run_until_stopped()


def run_daemon(home: Path, log_level: int = logging.INFO) -> None:
    """Run the daemon of ``home`` in the foreground until ``p2prtc stop`` or a signal."""
    # The store, the log and everything else we keep: owner only. Notebooks we create get
    # the user's own umask, as their editor would.
    files.use_umask_for_new_files(os.umask(0o077))
    lock = _HomeLock(home)
    lock.acquire()
    _configure_logging(home, log_level)
    asyncio.run(_serve(home, DaemonConfig.from_env()))
