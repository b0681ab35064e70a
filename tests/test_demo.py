"""The README's first command: ``p2prtc demo`` works on a fresh machine (loopback only)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_demo_syncs_both_ways_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2prtc", "demo"], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stderr
    assert "on bob's disk after" in result.stdout
    assert "on alice's disk after" in result.stdout
    assert "both files identical: yes" in result.stdout
