"""WebRTC links over a rendezvous pipe: the sealed SDP offer and answer, and the stack behind.

aiortc is imported when links are coming, on one thread off the event loop (``LinkLoader``),
not at start; the ICE settings come from the daemon's config only (no default servers).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from p2prtc.adapters.ice import IceConfig, IceServer
from p2prtc.adapters.webrtc_deps import import_dependencies
from p2prtc.core.handshake import Authenticated
from p2prtc.daemon.config import DaemonConfig
from p2prtc.daemon.memory import exempt_loaded_code_from_collections
from p2prtc.daemon.pipes import HANDSHAKE_TIMEOUT_S, BytePipe

if TYPE_CHECKING:  # imported when the first link is made: see WEBRTC
    from p2prtc.adapters.webrtc import PeerLink

logger = logging.getLogger(__name__)

# The WebRTC adapter, imported when the first link is made, not at start: aiortc imports
# PyAV (FFmpeg) and its codecs, about 40 MB and 0.15-0.3 s, which a daemon that starts for
# a wrong code, or runs with no peer, never needs (docs/benchmarks.md).
WEBRTC = "p2prtc.adapters.webrtc"

LINK_OPEN_TIMEOUT_S = 15.0


class LinkLoader:
    """Imports the WebRTC stack ahead of the first link, in the background."""

    def __init__(self) -> None:
        # Every import of the WebRTC stack runs on this one thread: two threads importing
        # the same packages at once can deadlock on their module locks.
        self._importer = ThreadPoolExecutor(1, thread_name_prefix="webrtc-import")
        self._links_loading: asyncio.Future[None] | None = None
        self._preloading: asyncio.Future[None] | None = None

    def prepare_links(self) -> None:
        """Import the WebRTC stack in a thread, once, when links are coming (a share is
        open, a join through a relay started): the first link then does not wait for it, and
        meanwhile the event loop keeps answering."""
        if self._links_loading is None:
            logger.info("loading the WebRTC stack")  # in the log's order with the joins
            loop = asyncio.get_running_loop()
            self._links_loading = loop.run_in_executor(self._importer, _import_webrtc)

    async def ready(self) -> None:
        """Until the WebRTC stack is imported, in its thread, not on the event loop (which
        meanwhile writes, say, a joiner's file from a state just merged)."""
        self.prepare_links()
        assert self._links_loading is not None
        await asyncio.shield(self._links_loading)

    def preload_link_dependencies(self) -> None:
        """Import aiortc's codec-free dependencies in the background (adapters/webrtc_deps),
        unless the whole stack is loading already: a daemon with no share yet (it may soon
        join one) then loads only aiortc and PyAV when its first link comes."""
        if self._links_loading is None and self._preloading is None:
            loop = asyncio.get_running_loop()
            self._preloading = loop.run_in_executor(self._importer, import_dependencies)

    async def close(self) -> None:
        # An import under way finishes first (a fraction of a second): its result then
        # reaches a loop that is still open.
        await asyncio.to_thread(self._importer.shutdown, wait=True, cancel_futures=True)


async def offer_link(pipe: BytePipe, auth: Authenticated, ice: IceConfig) -> PeerLink:
    """The dialler's side: our SDP offer and the peer's answer, sealed under the handshake."""
    from p2prtc.adapters.webrtc import make_offer  # see WEBRTC

    link, offer = await make_offer(ice)
    try:
        await pipe.send(auth.channel.seal(offer.encode()))
        answer = auth.channel.open(await pipe.recv(HANDSHAKE_TIMEOUT_S)).decode()
        await link.accept_answer(answer)
        await link.wait_open(LINK_OPEN_TIMEOUT_S)
    except BaseException:
        await link.close()
        raise
    return link


async def answer_link(pipe: BytePipe, auth: Authenticated, ice: IceConfig) -> PeerLink:
    """The listener's side: the peer's sealed SDP offer, our sealed answer."""
    offer = auth.channel.open(await pipe.recv(HANDSHAKE_TIMEOUT_S)).decode()
    from p2prtc.adapters.webrtc import make_answer  # see WEBRTC

    link, answer = await make_answer(ice, offer)
    try:
        await pipe.send(auth.channel.seal(answer.encode()))
        await link.wait_open(LINK_OPEN_TIMEOUT_S)
    except BaseException:
        await link.close()
        raise
    return link


def _import_webrtc() -> None:
    started = time.perf_counter()
    importlib.import_module(WEBRTC)
    logger.debug("WebRTC stack imported in %.0f ms", (time.perf_counter() - started) * 1000)
    exempt_loaded_code_from_collections()


def ice_config(config: DaemonConfig) -> IceConfig:
    servers = [
        IceServer(urls=[url], username=user, credential=password)
        for url, user, password in config.ice_servers()
    ]
    return IceConfig(servers, host_addresses=config.interfaces, relay_only=config.relay_only)
