"""The process's memory as the system counts it, and giving freed heap pages back (glibc).

CPython hands what it frees (a parsed notebook, a rendered file text, a doc state: megabytes
each for a notebook with images, in many pieces) back to glibc's malloc, which keeps the
pages for later: after ten daemon writes of the 1.7 MB sample notebook the process held
about 45 MB of free heap in its RSS. ``malloc_trim(0)`` returns every free page, anywhere in
the heap, to the system (a few ms to tens of ms). Other C libraries have no such call:
there, ``HeapTrimmer.load`` returns None and the daemon does without.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def anonymous_rss_bytes() -> int:
    """This process's resident memory that no file backs (its heap, not its libraries)."""
    fields = Path("/proc/self/statm").read_text().split()
    resident, shared = int(fields[1]), int(fields[2])
    return (resident - shared) * _PAGE_BYTES


class HeapTrimmer:
    """glibc's malloc_trim, through ctypes."""

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._malloc_trim = libc.malloc_trim
        self._malloc_trim.restype = ctypes.c_int
        self._malloc_trim.argtypes = [ctypes.c_size_t]

    @classmethod
    def load(cls) -> HeapTrimmer | None:
        """The trimmer of this process's C library; None if it has no malloc_trim."""
        try:
            return cls(ctypes.CDLL(ctypes.util.find_library("c")))
        except (OSError, AttributeError) as exc:
            logger.debug("no malloc_trim here (%s): freed heap memory stays with the process", exc)
            return None

    def trim(self) -> None:
        """Give the heap's free pages back to the system."""
        self._malloc_trim(0)
