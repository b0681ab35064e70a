"""Crash points: named steps of a shared file's writes at which a test makes the process die.

They sit where a crash must lose nothing (tests/test_crash_points.py): after a save's update
is persisted, around the atomic write, around compaction, in the write-race paths.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

# Names a crash_point at which the process kills itself (tests only).
CRASH_AT_ENV = "P2PRTC_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, as by kill -9, when ``P2PRTC_CRASH_AT`` names this point: deterministic
    crashes for the tests (tests/test_crash_points.py), at the steps where a crash must
    lose nothing. Read at each call: cheap, and a test process can set it."""
    if os.environ.get(CRASH_AT_ENV) == name:
        logger.warning("crash point %s: dying as by kill -9", name)
        os.kill(os.getpid(), signal.SIGKILL)
