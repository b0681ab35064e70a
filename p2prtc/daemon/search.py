"""What a join searches with (mDNS, relays, static peers), told to the user as it starts and
again, with the one setting that would help most, when nothing was found in time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SearchPlan:
    """The ways this daemon can find other daemons, as configured and as they work now."""

    mdns: list[str]  # the addresses mDNS runs on; empty when it is off
    mdns_error: str | None
    relays: list[dict[str, Any]]  # {"url", "connected"} per signaling relay
    peers: list[str]  # static rendezvous endpoints, host:port

    def event(self) -> dict[str, Any]:
        """The ``searching`` progress event (docs/cli.md)."""
        return {
            "phase": "searching",
            "mdns": self.mdns,
            "mdns_error": self.mdns_error,
            "relays": self.relays,
            "peers": self.peers,
        }

    def tried(self) -> str:
        """What was tried, in one line."""
        lan = self.mdns_error or (f"mDNS on {', '.join(self.mdns)}" if self.mdns else "mDNS off")
        relays = ", ".join(
            f"{relay['url']}{'' if relay['connected'] else ' (not connected)'}"
            for relay in self.relays
        )
        return f"{lan}; relays: {relays or 'none'}; peers: {', '.join(self.peers) or 'none'}"

    def hint(self) -> str:
        """The one setting that would help most, given what was tried."""
        if not self.mdns and not self.relays and not self.peers:
            return "nothing to search with: turn mDNS on, or give a relay (--signal URL)"
        if self.mdns_error and not self.relays:
            return "give the other daemon's address instead: P2PRTC_PEERS=HOST:PORT"
        down = [relay["url"] for relay in self.relays if not relay["connected"]]
        if down:
            return f"the relay {down[0]} cannot be reached: check that it runs, or use another"
        if not self.relays:
            return (
                "from another network, both daemons need the same relay:"
                " p2prtc stop, then p2prtc --signal URL join CODE"
            )
        return "check that the other daemon runs with the same relay (p2prtc status there)"

    def explain(self, waited_s: float, answers: list[str] | None = None) -> str:
        """What was tried for how long, what the daemons reached answered, and the hint:
        the detail of a join that timed out."""
        answered = f"; {', '.join(answers)}" if answers else ""
        return f"tried for {waited_s:.0f} s: {self.tried()}{answered}; hint: {self.hint()}"
