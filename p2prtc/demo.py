"""``p2prtc demo``: a newcomer's first run, on one machine, with nothing configured.

Two daemons with two temporary homes talk over loopback only (no mDNS, ICE on 127.0.0.1):
one shares a small notebook, the other joins with the printed code, then each side edits its
own file like an editor would and the change shows up on the other side. Everything is
removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2prtc.errors import P2PError

_LOOPBACK = {"P2PRTC_INTERFACES": "127.0.0.1", "P2PRTC_MDNS": "0"}
_WAIT_S = 20.0


class DemoFailed(P2PError):
    """The demo did not see the change arrive on the other side."""


def _sample_notebook() -> dict[str, Any]:
    def cell(cell_type: str, source: str, cell_id: str) -> dict[str, Any]:
        base: dict[str, Any] = {"cell_type": cell_type, "id": cell_id, "metadata": {}}
        base["source"] = source.splitlines(True)
        if cell_type == "code":
            base.update(execution_count=None, outputs=[])
        return base

    return {
        "cells": [
            cell("markdown", "# p2prtc demo\nThis notebook lives on two 'machines'.", "intro"),
            cell("code", "x = 21\nprint(x * 2)", "compute"),
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _save(path: Path, nb: dict[str, Any]) -> None:
    """Write like Jupyter does: a temp file renamed over the notebook."""
    tmp = path.with_name(path.name + ".saving")
    tmp.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class _Machine:
    def __init__(self, root: Path, name: str, extra_env: dict[str, str]) -> None:
        self.name = name
        self.work = root / name
        self.work.mkdir()
        self.env = {**os.environ, **_LOOPBACK, "P2PRTC_HOME": str(root / f".{name}-home")}
        self.env.update(extra_env)

    def p2prtc(self, *args: str) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "p2prtc", *args, "--json"],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        if result.returncode != 0:
            raise DemoFailed(f"{self.name}: p2prtc {args[0]}: {result.stderr.strip()}")
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "p2prtc", "stop"],
            env=self.env,
            capture_output=True,
            timeout=30,
        )


def _wait_for(path: Path, text: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < _WAIT_S:
        try:
            if text in path.read_text():
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.005)
    raise DemoFailed(f"{text!r} never reached {path}")


def run_demo(echo: Callable[[str], None] = print) -> None:
    with tempfile.TemporaryDirectory(prefix="p2prtc-demo-") as tmp:
        root = Path(tmp)
        alice = _Machine(root, "alice", {})
        bob: _Machine | None = None
        try:
            notebook = alice.work / "analysis.ipynb"
            _save(notebook, _sample_notebook())
            code = alice.p2prtc("share", str(notebook))["code"]
            echo(f"alice$ p2prtc share analysis.ipynb    ->  join code {code}")
            port = alice.p2prtc("status")["daemon"]["rendezvous_port"]
            bob = _Machine(root, "bob", {"P2PRTC_PEERS": f"127.0.0.1:{port}"})
            joined = Path(bob.p2prtc("join", code)["path"])
            echo(f"bob$   p2prtc join {code}       ->  {joined.name} on bob's disk")

            nb = json.loads(notebook.read_text())
            nb["cells"][1]["source"] = ["x = 21  # alice was here\n", "print(x * 2)"]
            _save(notebook, nb)
            took = _wait_for(joined, "alice was here")
            echo(f"alice saves an edit             ->  on bob's disk after {took * 1000:.0f} ms")

            nb = json.loads(joined.read_text())
            nb["cells"][0]["source"][-1] += "\n"
            nb["cells"][0]["source"].append("Bob added this line.")
            _save(joined, nb)
            took = _wait_for(notebook, "Bob added this line.")
            echo(f"bob saves an edit               ->  on alice's disk after {took * 1000:.0f} ms")
            same = notebook.read_bytes() == joined.read_bytes()
            echo("both files identical: " + ("yes" if same else "NO"))
            if not same:
                raise DemoFailed("the two files differ")
        finally:
            for machine in (alice, bob):
                if machine is not None:
                    machine.stop()
    echo("demo done: daemons stopped, temporary files removed")
