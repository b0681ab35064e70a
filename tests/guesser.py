"""An online join-code guesser, as an attacker would write it (issue 10).

It opens a join on a nameplate, sends its SPAKE2 message for a guessed code, reads the host's
answer and then walks away in one of several ways, hoping the host does not count the guess.
It reaches the host directly (a LAN rendezvous port) or over a signaling relay topic.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable

from joins import another_code

from p2prtc.adapters.rendezvous import connect_pipe
from p2prtc.core.codes import JoinCode, parse_code
from p2prtc.core.handshake import InviteJoiner
from p2prtc.core.keys import invite_topic
from p2prtc.daemon.pipes import BytePipe, envelope, expect_ok
from p2prtc.daemon.signal_pipes import SignalHub

ANSWER_TIMEOUT_S = 10.0


class WalkAway(enum.Enum):
    CLOSE = "close"  # close the pipe right after the host's answer
    JUNK = "junk"  # send garbage instead of a confirmation
    OUT_OF_ORDER = "out-of-order"  # send a message the host does not expect now
    SILENCE = "silence"  # say nothing more and let the host time out


PipeOpener = Callable[[], Awaitable[BytePipe]]


async def guess(open_pipe: PipeOpener, code: JoinCode, how: WalkAway, linger_s: float) -> bytes:
    """One guess at ``code``; returns the host's answer to the PAKE message."""
    pipe = await open_pipe()
    try:
        await pipe.send(envelope("invite", nameplate=code.nameplate))
        await expect_ok(pipe, ANSWER_TIMEOUT_S)
        (pake,) = InviteJoiner(code).start()
        await pipe.send(pake)
        answer = await pipe.recv(ANSWER_TIMEOUT_S)
        if how is WalkAway.JUNK:
            await pipe.send(b"\x00\xff junk")
        elif how is WalkAway.OUT_OF_ORDER:
            await pipe.send(pake)
        if how is not WalkAway.CLOSE:
            await asyncio.sleep(linger_s)
        return answer
    finally:
        await pipe.close()


def wrong_code(code: str) -> JoinCode:
    """A code on the same nameplate with other words."""
    return parse_code(another_code(code))


def lan_opener(host: str, port: int) -> PipeOpener:
    async def open_pipe() -> BytePipe:
        return await connect_pipe(host, port, ANSWER_TIMEOUT_S)

    return open_pipe


class RelayGuesser:
    """A guesser on a signaling relay: finds who offers a nameplate, opens pipes to it."""

    def __init__(self, url: str, nameplate: str) -> None:
        self.topic = invite_topic(nameplate)
        self.hosts: list[str] = []
        self.hub = SignalHub([url], self._on_presence, self._on_pipe)

    def _on_presence(self, topic: str, peer: str, addressed: bool) -> None:
        if topic == self.topic and addressed and peer not in self.hosts:
            self.hosts.append(peer)

    async def _on_pipe(self, pipe: object) -> None:
        return None  # nobody dials a guesser

    async def find_host(self, timeout: float = ANSWER_TIMEOUT_S) -> str:
        self.hub.start()
        await self.hub.set_topics({self.topic})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.hosts:
            if loop.time() > deadline:
                raise AssertionError("no daemon answered on the invitation's topic")
            await self.hub.announce(self.topic)
            await asyncio.sleep(0.2)
        return self.hosts[0]

    def opener(self, host: str) -> PipeOpener:
        async def open_pipe() -> BytePipe:
            return self.hub.open_pipe(self.topic, host)

        return open_pipe
