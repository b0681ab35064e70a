"""aiortc's dependencies that hold no media codec, imported ahead of the first link.

aiortc is loaded only when links are coming, because it imports PyAV and FFmpeg (see
docs/adapters.md). About 40% of its import time, though, goes to its other dependencies
(cryptography's X.509, pyOpenSSL, aioice with dnspython, libsrtp), which load no codec and
take about 11 MB: a running daemon imports those in the background once it answers, so that
a join in a daemon that holds no share yet waits only for aiortc itself and PyAV.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

# What aiortc imports from outside itself at module level, except PyAV (`av`).
MODULES = (
    "aioice",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "OpenSSL.SSL",
    "pylibsrtp",
    "pyee.asyncio",
    "google_crc32c",
    "fractions",
)


def import_dependencies() -> None:
    """Import MODULES. Only a head start: one a future aiortc no longer needs (and so may
    not be installed) is skipped, and aiortc's own import reports what is really missing."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            logger.debug("not preloading %s: %s", name, exc)
