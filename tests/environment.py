"""What the multi-machine tests need from this machine, and what happens when it is missing.

Locally a missing part (network namespaces, coturn, Redis, a tmpfs, tmux) skips the tests that
need it, with the reason. Under ``CI=true`` (set by ``.ci/run``) it fails them: a broken
install step must not silently drop the multi-machine coverage.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)
