"""JupyterLab on two "machines" in network namespaces: daemons that find each other by mDNS
on the test's bridge, a Jupyter server with jupyter-collaboration inside each namespace, and
a tab inside each (tests/tab_agent.py): keystrokes cross over WebRTC between the namespaces.

The loopback variant, with more cases, is tests/test_jupyter.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import Node, copy_notebook, read_notebook, wait_until
from jupyter_servers import jupyter_server
from netns import Agent, NetnsLab

NOTEBOOK = "lists.ipynb"
TAB_AGENT = str(Path(__file__).with_name("tab_agent.py"))
# mDNS discovery plus a WebRTC link take seconds.
SYNC_TIMEOUT_S = 25.0

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(180)]


def typed_and_arrived(writer: Agent, reader: Agent, cell: int, text: str) -> None:
    writer.send({"cmd": "type", "cell": cell, "text": text})
    writer.expect(lambda m: m.get("typed") == text)
    reader.send({"cmd": "wait", "cell": cell, "endswith": text, "timeout": SYNC_TIMEOUT_S})
    answer = reader.expect(lambda m: "arrived" in m, timeout=SYNC_TIMEOUT_S + 5)
    assert answer["arrived"], answer


def test_keystrokes_cross_between_jupyterlab_tabs_in_two_namespaces(
    tmp_path: Path, notebooks_dir: Path
) -> None:
    with NetnsLab(2) as lab:
        a, b = (
            Node(
                tmp_path / f"{name}-home",
                tmp_path / name,
                {"P2PRTC_INTERFACES": host.address, "P2PRTC_MDNS": "1"},
                host.namespace,
            )
            for name, host in zip("ab", lab.nodes, strict=True)
        )
        try:
            for node in (a, b):
                node.workdir.mkdir()
            a_file = copy_notebook(notebooks_dir / NOTEBOOK, a.workdir / NOTEBOOK)
            b_file = Path(b.join(a.share(a_file))["path"])
            wait_until(lambda: a.peers_synced(a_file, 1), SYNC_TIMEOUT_S, "A synced with B")
            with (
                jupyter_server(a.workdir, a, tmp_path / "jupyter-a") as server_a,
                jupyter_server(b.workdir, b, tmp_path / "jupyter-b") as server_b,
            ):
                tab_a, tab_b = (
                    lab.spawn_agent(host, [TAB_AGENT, str(s.port), s.token, NOTEBOOK])
                    for host, s in zip(lab.nodes, (server_a, server_b), strict=True)
                )
                for tab in (tab_a, tab_b):
                    tab.expect(lambda m: m.get("ready") is True, timeout=60)
                typed_and_arrived(tab_a, tab_b, 0, "typed in A's namespace")
                typed_and_arrived(tab_b, tab_a, 1, "typed in B's namespace")
                wait_until(
                    lambda: (
                        a_file.read_bytes() == b_file.read_bytes()
                        and "typed in B's namespace" in a_file.read_text()
                    ),
                    SYNC_TIMEOUT_S,
                    "both files converged",
                )
                for tab in (tab_a, tab_b):
                    assert tab.wait() == 0
        finally:
            for node in (a, b):
                node.shut_down()
    sources = ["".join(cell["source"]) for cell in read_notebook(a_file)["cells"]]
    assert sources[0].endswith("typed in A's namespace")
    assert sources[1].endswith("typed in B's namespace")
