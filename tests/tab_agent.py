"""A JupyterLab tab inside a network namespace, driven over JSON lines (tests/netns.py Agent).

    python tests/tab_agent.py PORT TOKEN PATH

Opens a tab (tests/jupyter_servers.py ``open_tab``) on PATH of the Jupyter server at
127.0.0.1:PORT of its namespace, says ``{"ready": true}``, then answers one line per command:

- ``{"cmd": "type", "cell": i, "text": s}``: types ``s`` at the end of cell i -> ``{"typed": s}``
- ``{"cmd": "wait", "cell": i, "endswith": s, "timeout": t}`` -> ``{"arrived": bool}``

It ends when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from tests.jupyter_servers import ServerAddress, Tab, open_tab


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def answer(tab: Tab, command: dict[str, Any]) -> dict[str, Any]:
    cell = int(command["cell"])
    if command["cmd"] == "type":
        tab.type(cell, command["text"])
        return {"typed": command["text"]}
    deadline = asyncio.get_running_loop().time() + float(command["timeout"])
    while not tab.source(cell).endswith(command["endswith"]):
        if asyncio.get_running_loop().time() > deadline:
            return {"arrived": False, "source": tab.source(cell)}
        await asyncio.sleep(0.01)
    return {"arrived": True}


async def main(port: int, token: str, path: str) -> None:
    async with open_tab(ServerAddress(port, token), path) as tab:
        say({"ready": True})
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            say(await answer(tab, json.loads(line)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
