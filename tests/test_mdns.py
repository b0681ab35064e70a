"""Announcer and Browser over real multicast, only inside namespaces the test creates.

Run as a script (`python tests/test_mdns.py announce|browse ...`), this file is the agent
the tests start inside a namespace; it speaks JSON lines on stdio.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import pytest
from daemons import wait_until
from netns import Agent, NetnsLab, Node

from p2prtc.adapters.mdns import (
    Announcer,
    Browser,
    DiscoveredService,
    Lan,
    checked_properties,
    lan_addresses,
    new_instance_name,
)

pytestmark = pytest.mark.timeout(60)

PORT = 4242
FIRST, SECOND = {"v": "1", "n": "7"}, {"v": "1", "n": "7,12"}


@pytest.mark.parametrize(
    "interfaces", [pytest.param([], id="empty"), ["0.0.0.0"], ["eth0"], ["::1"]]
)
def test_interfaces_must_be_specific_ipv4_addresses(interfaces: list[str]) -> None:
    with pytest.raises(ValueError):
        Lan.open(interfaces)  # what announcing and browsing run on


@pytest.mark.parametrize(
    "properties",
    [{"k": "x" * 300}, {"": "x"}, {"a=b": "c"}, {f"k{i}": "x" * 200 for i in range(8)}],
    ids=["long-entry", "empty-key", "equals-in-key", "too-large"],
)
def test_txt_properties_must_fit(properties: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        checked_properties(properties)  # Announcer.start and update check with it


def test_lan_addresses_skip_loopback() -> None:
    assert not any(address.startswith("127.") for address in lan_addresses())


def _is_event(kind: str, name: str | None = None) -> Any:
    return lambda m: m["event"] == kind and (name is None or m["name"] == name)


@pytest.mark.netns
@pytest.mark.parametrize("topology", ["two-machines", "one-machine-loopback"])
def test_browser_sees_announce_update_and_removal(topology: str) -> None:
    with NetnsLab(2 if topology == "two-machines" else 1) as lab:
        announcing, browsing = lab.nodes[0], lab.nodes[-1]

        def interface(node: Node) -> str:
            return node.address if topology == "two-machines" else "127.0.0.1"

        browser = lab.spawn_agent(browsing, [__file__, "browse", interface(browsing)])
        assert browser.expect(_is_event("browsing"))["lan"] == [browsing.address]
        properties = {"v": "1", "n": "7"}
        # Chosen before announcing, so a daemon browsing first still knows its own service.
        name = new_instance_name()
        announcer = lab.spawn_agent(
            announcing,
            [__file__, "announce", interface(announcing), str(PORT), json.dumps(properties), name],
        )
        assert announcer.expect(_is_event("announced"))["name"] == name

        seen = browser.expect(_is_event("change", name))
        assert seen["addresses"] == [interface(announcing)]
        assert seen["port"] == PORT
        assert seen["properties"] == properties

        announcer.send({"properties": {"v": "1", "n": "7,12"}})
        announcer.expect(_is_event("updated"))
        assert browser.expect(_is_event("change", name))["properties"] == {"v": "1", "n": "7,12"}

        assert announcer.wait() == 0  # the agent withdraws the service as it exits
        browser.expect(_is_event("remove", name))
        assert browser.wait() == 0


@pytest.mark.netns
def test_browser_follows_updates_back_to_properties_it_saw_before() -> None:
    """An invitation opened, a second one, the second closed: the TXT goes back to what it
    was a second earlier. zeroconf's browser reports only records its cache lacks, and the
    earlier TXT record is still cached: the browser must still end on the current one."""
    with NetnsLab(2) as lab:
        browser, announcer, name = _browsing_an_announcer(lab)
        for properties in (SECOND, FIRST):
            announcer.send({"properties": properties})
            announcer.expect(_is_event("updated"))

        wait_until(lambda: _known(browser).get(name) == FIRST, what="the browser ends on it")
        assert announcer.wait() == 0
        assert browser.wait() == 0


@pytest.mark.netns
def test_a_daemon_that_missed_an_update_learns_it_by_asking() -> None:
    """A joiner whose LAN lost the invitation's announcements (multicast) still finds the
    invitation: `ask_now`, which a join repeats, gets unicast answers. A daemon announces
    and browses, as the agent here does; two mDNS endpoints in one namespace share port
    5353 and the kernel gave each unicast answer to one of them only."""
    with NetnsLab(2) as lab:
        browser, announcer, name = _browsing_an_announcer(lab, new_instance_name())
        lab.stop_multicast_to(lab.nodes[1])
        announcer.send({"properties": SECOND})
        announcer.expect(_is_event("updated"))
        wait_until(lambda: _known(browser, "ask").get(name) == SECOND, what="asked and found")
        assert announcer.wait() == 0
        assert browser.wait() == 0


def _browsing_an_announcer(lab: NetnsLab, *own_name: str) -> tuple[Agent, Agent, str]:
    """A browse agent on the lab's second node (announcing `own_name` too, if given), then
    an announce agent with `FIRST` on the first node, seen by the browser; their service
    name."""
    announcing, browsing = lab.nodes
    browser = lab.spawn_agent(browsing, [__file__, "browse", browsing.address, *own_name])
    browser.expect(_is_event("browsing"))
    name = new_instance_name()
    announcer = lab.spawn_agent(
        announcing,
        [__file__, "announce", announcing.address, str(PORT), json.dumps(FIRST), name],
    )
    assert browser.expect(_is_event("change", name))["properties"] == FIRST
    return browser, announcer, name


def _known(browser: Agent, cmd: str = "known") -> dict[str, Any]:
    """What the browse agent knows: service name -> properties (after asking, for "ask")."""
    browser.send({"cmd": cmd})
    known: dict[str, Any] = browser.expect(_is_event("known"))["services"]
    return known


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _lines() -> Any:
    """stdin's JSON lines, until it is closed."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        yield json.loads(line)


async def _announce(interface: str, port: str, properties: str, name: str) -> None:
    lan = Lan.open([interface])
    announcer = await Announcer.start(lan, int(port), json.loads(properties), name)
    _say("announced", name=announcer.name)
    async for command in _lines():
        await announcer.update(command["properties"])
        _say("updated")
    await announcer.close()
    await lan.close()


async def _browse(interface: str, own_name: str | None = None) -> None:
    """Says each change and removal; `{"cmd": "known"}` on stdin: every service's
    properties as reported last; `{"cmd": "ask"}`: the same after `Browser.ask_now`. With
    `own_name`, it announces a service of its own too, on the same `Lan`, as a daemon does."""
    known: dict[str, dict[str, str]] = {}

    def on_change(service: DiscoveredService) -> None:
        known[service.name] = service.properties
        _say("change", **asdict(service))

    def on_remove(name: str) -> None:
        known.pop(name, None)
        _say("remove", name=name)

    lan = Lan.open([interface])
    browser = await Browser.start(lan, on_change, on_remove)
    own = await Announcer.start(lan, PORT, {"v": "1"}, own_name) if own_name else None
    _say("browsing", lan=lan_addresses())
    async for command in _lines():
        if command["cmd"] == "ask":
            browser.ask_now()
        _say("known", services=known)
    if own is not None:
        await own.close()
    await browser.close()
    await lan.close()


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    asyncio.run(_announce(*args) if role == "announce" else _browse(*args))
