"""Shared test configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "shared" / "notebooks"


@pytest.fixture(scope="session")
def notebooks_dir() -> Path:
    """The real public notebooks shipped in ../shared/notebooks."""
    if not NOTEBOOKS_DIR.is_dir():
        pytest.fail(f"missing sample notebooks at {NOTEBOOKS_DIR}")
    return NOTEBOOKS_DIR


# Fixtures that start a real signaling relay process (tests/signaling_server.py) and a
# real redis-server for relay clusters (tests/redis_server.py).
pytest_plugins = ["signaling_server", "redis_server"]
