"""Earlier releases of p2prtc beside this one, for tests of upgrades and mixed versions.

A release is a commit of this clone's history: its ``p2prtc`` package is extracted and run
with the same interpreter and packages (their dependencies are the same), through
``PYTHONPATH``, which comes before the installed package on ``sys.path``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from daemons import Node

REPO = Path(__file__).resolve().parents[1]


def release_source(commit: str, folder: Path) -> Path:
    """The ``p2prtc`` package of ``commit`` extracted into ``folder`` (for PYTHONPATH);
    the test is skipped when this clone does not hold the commit (a shallow clone)."""
    has_commit = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if has_commit.returncode != 0:
        pytest.skip(f"this clone does not hold commit {commit[:8]} (a shallow clone?)")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "p2prtc"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def on_release(node: Node, source: Path) -> Node:
    """``node`` runs the release extracted at ``source`` (from its next start)."""
    node.env["PYTHONPATH"] = str(source)
    return node
