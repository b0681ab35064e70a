"""Keeping an idle daemon small: after work, the heap's freed pages go back to the system.

Every CHECK_INTERVAL_S the daemon reads its anonymous RSS. When that grew by more than
GROWTH_BYTES over the lowest seen since the last trim (saves, writes or a join of a notebook
with big outputs: most of it memory already freed, see adapters/heap.py) and the daemon was
quiet over the interval (at most QUIET_CPU_S of CPU: it is not in the middle of a burst of
saves), it trims. Memory that is really in use stays, and the next trim waits for growth
beyond it: an idle daemon checks two counters and trims nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from p2prtc.adapters.heap import HeapTrimmer, anonymous_rss_bytes

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0
GROWTH_BYTES = 8 * 2**20
QUIET_CPU_S = 0.05


class TrimPolicy:
    """When to trim, from the anonymous RSS and the CPU used over each interval."""

    def __init__(self, rss_bytes: int) -> None:
        self._floor = rss_bytes  # the lowest RSS since the last trim

    def due(self, rss_bytes: int, interval_cpu_s: float) -> bool:
        self._floor = min(self._floor, rss_bytes)
        return interval_cpu_s <= QUIET_CPU_S and rss_bytes - self._floor > GROWTH_BYTES

    def trimmed(self, rss_bytes: int) -> None:
        self._floor = rss_bytes


async def keep_heap_small(trimmer: HeapTrimmer) -> None:
    """Run until cancelled: trim the heap when TrimPolicy says so."""
    policy = TrimPolicy(anonymous_rss_bytes())
    cpu_s = time.process_time()
    while True:
        await asyncio.sleep(CHECK_INTERVAL_S)
        now_s = time.process_time()
        interval_cpu_s, cpu_s = now_s - cpu_s, now_s
        rss_bytes = anonymous_rss_bytes()
        if policy.due(rss_bytes, interval_cpu_s):
            trimmer.trim()
            after = anonymous_rss_bytes()
            policy.trimmed(after)
            logger.debug("gave %d MiB of freed heap back", (rss_bytes - after) >> 20)
            cpu_s = time.process_time()  # the trim's own CPU is no sign of work


def exempt_loaded_code_from_collections() -> None:
    """Take every object alive now out of the cyclic garbage collector's walks, once the
    daemon's code is loaded (the WebRTC stack last): modules, classes and functions that
    live as long as the process. A full collection walked them all, 18 to 39 ms during which
    the daemon answers nothing (four in a minute of saves: a save or keystroke that lands in
    one waits); it now walks what was made since. They are still freed by reference
    counting; only cycles among them would stay, and code does not become garbage."""
    gc.freeze()
    logger.debug("%d objects loaded with the code exempted from collections", gc.get_freeze_count())
