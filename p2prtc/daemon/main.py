"""Running the daemon of one home in the foreground: its lock, its log, its signals."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from p2prtc import paths
from p2prtc.adapters import files
from p2prtc.control import SHUTDOWN_BOUND_S
from p2prtc.daemon import control
from p2prtc.daemon.app import Daemon
from p2prtc.daemon.config import DaemonConfig

logger = logging.getLogger(__name__)


class _HomeLock:
    """One daemon per home: an exclusive lock held until the process has exited.

    A raw descriptor, never closed: only the kernel releases it, at exit. (A file object
    would close when collected, and the CLI, which takes the lock's release as "exited",
    would start a new daemon while this one still tears down.)"""

    def __init__(self, home: Path) -> None:
        self._fd = os.open(paths.lock_file(home), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def acquire(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise control.DaemonAlreadyRunning() from None


def _configure_logging(home: Path, level: int) -> None:
    log_file = paths.log_file(home)
    handlers: list[logging.Handler] = [logging.FileHandler(log_file)]
    if not _stderr_is(log_file):
        # In the foreground (a terminal, a service manager's journal) the log is also shown
        # where the daemon runs; started by the CLI, stderr already is the log file.
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
    running = asyncio.create_task(daemon.run_until_stopped())
    await daemon.stop_requested()
    _exit_if_still_running_after(SHUTDOWN_BOUND_S)
    await running


def _stderr_is(path: Path) -> bool:
    try:
        ours, log = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError):  # no stderr at all: nowhere else to show the log
        return True
    return (ours.st_dev, ours.st_ino) == (log.st_dev, log.st_ino)


def _exit_if_still_running_after(seconds: float) -> None:
    """Shutdown always ends: whatever hangs in it (a task that will not cancel, a thread
    of the default executor that asyncio.run waits for) cannot keep the process alive.
    Nothing is lost by exiting: every ingested change was durable before it was acked."""

    def force_exit() -> None:
        logger.warning("shutdown still running after %.0f s: exiting now", seconds)
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, force_exit)
    timer.daemon = True  # a clean exit does not wait for it
    timer.start()


def run_daemon(home: Path, log_level: int = logging.INFO) -> None:
    """Run the daemon of ``home`` in the foreground until ``p2prtc stop`` or a signal."""
    # The store, the log and everything else we keep: owner only. Notebooks we create get
    # the user's own umask, as their editor would.
    files.use_umask_for_new_files(os.umask(0o077))
    lock = _HomeLock(home)
    lock.acquire()
    _configure_logging(home, log_level)
    asyncio.run(_serve(home, DaemonConfig.from_env()))
