"""Shared test configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

# Our stand-ins for real notebooks, written by scripts/make_test_notebooks.py (see its README).
NOTEBOOKS_DIR = Path(__file__).resolve().parent / "notebooks"


@pytest.fixture(scope="session")
def notebooks_dir() -> Path:
    """The sample notebooks of tests/notebooks/."""
    if not NOTEBOOKS_DIR.is_dir():
        pytest.fail(f"missing sample notebooks at {NOTEBOOKS_DIR}")
    return NOTEBOOKS_DIR


# Fixtures that start a real signaling relay process (tests/signaling_server.py) and a
# real redis-server for relay clusters (tests/redis_server.py).
pytest_plugins = ["signaling_server", "redis_server"]
