"""Simulate late joiners into a mesh whose members are all full, with the real admission rules.

    .venv/bin/python scripts/sim_joins.py [--max-peers 1 2 3 8] [--runs 300] [--joiners 12]
        [--no-save]

Daemons are nodes, links are edges; no sockets, no clock but a number. Every decision is
p2prtc.core.mesh's: which listener admits whom (``admission``), which link a full one
sheds for a newcomer (``link_to_shed``), whom an ordinary member dials (``should_dial``).

- Start: ``2 * bound`` members, each linked to exactly ``bound`` others (the bound a
  newcomer is still admitted at, ``member_bound(max_peers, joining=True)``): a mesh where no
  member has room, the state a CI run under load ended in.
- Joiners arrive one by one, 0-10 s apart. A newcomer dials the members in a seeded order
  (as the dialer does: up to the bound at once); a listener admits it, sheds a settled link
  for it, or refuses. Refused by all, it retries 10 s later (links have settled meanwhile).
- After each join the mesh settles: a member shed down to no link is a newcomer again; a
  member below ``max_peers`` dials, as the dialer does, the members whose names sort after
  its own and that have room (no shedding for it).

Measured per ``max_peers``, with the rule and with the one before it (a full listener
refused everybody): joiners locked out, runs whose mesh ended split
(some member cannot reach another through links), the largest link count seen. Saves
bench-results/sim_joins.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from p2prtc.core.mesh import (
    STABLE_CONNECTION_S,
    Admission,
    HeldLink,
    admission,
    link_to_shed,
    member_bound,
    should_dial,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
JSON_PATH = REPO_ROOT / "bench-results" / "sim_joins.json"


@dataclass
class End:
    """One end of a link: when it opened, and whether the far end dialled as a newcomer."""

    opened_at: float
    came_as_newcomer: bool


@dataclass
class LinkSim:
    """Nodes (ints; a node's name sorts as its number) and their links."""

    max_peers: int
    rng: random.Random
    shed: bool = True  # False: the rule before shedding (a full listener refuses everyone)
    now: float = 0.0
    links: dict[int, dict[int, End]] = field(default_factory=dict)  # node -> peer -> its end
    most_links: int = 0

    @property
    def bound(self) -> int:
        return member_bound(self.max_peers, joining=True)

    def link(self, listener: int, dialler: int, *, newcomer: bool) -> None:
        self.links.setdefault(listener, {})[dialler] = End(self.now, newcomer)
        self.links.setdefault(dialler, {})[listener] = End(self.now, False)
        self.most_links = max(self.most_links, len(self.links[listener]), len(self.links[dialler]))

    def held(self, node: int) -> list[HeldLink]:
        return [
            HeldLink(str(peer), self.now - end.opened_at, end.came_as_newcomer)
            for peer, end in self.links[node].items()
        ]

    def admits(self, listener: int, dialler: int, *, newcomer: bool) -> bool:
        """The listener's decision, shedding a link if it takes one."""
        decision = admission(
            open_connections=len(self.links[listener]),
            max_peers=self.max_peers,
            newcomer=newcomer,
        )
        if decision is Admission.SHED_ONE:
            victim = link_to_shed(self.held(listener)) if self.shed else None
            if victim is None:
                return False
            del self.links[listener][int(victim)], self.links[int(victim)][listener]
        return decision is not Admission.REFUSE

    def join(self, newcomer: int) -> bool:
        """A newcomer dials the members in turn, up to the bound; whether one admitted it.
        (A joiner admitted only by joiners that have no content yet stays a newcomer in
        the daemon; here the run counts it as locked out.)"""
        self.links.setdefault(newcomer, {})
        members = [node for node in self.links if node != newcomer]
        for member in self.rng.sample(members, len(members)):
            if len(self.links[newcomer]) >= self.bound:
                break
            if member not in self.links[newcomer] and self.admits(member, newcomer, newcomer=True):
                self.link(member, newcomer, newcomer=True)
        return bool(self.links[newcomer])

    def settle(self) -> None:
        """Shed members with no link rejoin; members below max_peers dial ranked ones."""
        changed = True
        while changed:
            changed = False
            for node in sorted(self.links):
                if not self.links[node]:
                    changed |= self.join(node)
                    continue
                for other in sorted(self.links):
                    wanted = other != node and other not in self.links[node]
                    dial = should_dial(
                        newcomer=False,
                        open_connections=len(self.links[node]),
                        dials_in_progress=0,
                        max_peers=self.max_peers,
                        ranks=(f"{node:04d}", f"{other:04d}"),
                    )
                    if wanted and dial and self.admits(other, node, newcomer=False):
                        self.link(other, node, newcomer=False)
                        changed = True

    def reachable(self, start: int) -> set[int]:
        seen: set[int] = set()
        todo = [start]
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(self.links[node])
        return seen

    def connected(self) -> bool:
        return self.reachable(0) == set(self.links)

    def has_content(self, joiner: int) -> bool:
        """Linked, maybe through relays, to the sharer (node 0): it got the notebook."""
        return joiner in self.reachable(0)


def saturated(max_peers: int, rng: random.Random, *, shed: bool = True) -> LinkSim:
    """``2 * bound`` members, each linked to its nearest on a ring (and the one across, for
    an odd bound): every one holds exactly the bound, so none has room for anybody."""
    sim = LinkSim(max_peers, rng, shed)
    nodes = 2 * sim.bound
    for node in range(nodes):
        for step in range(1, sim.bound // 2 + 1):
            sim.link(node, (node + step) % nodes, newcomer=rng.random() < 0.5)
        if sim.bound % 2 and node < nodes // 2:
            sim.link(node, node + nodes // 2, newcomer=rng.random() < 0.5)
    return sim


@dataclass
class RunResult:
    locked_out: int  # joiners that got no path to the sharer, even on a second try
    split: bool  # the mesh ended in more than one piece
    most_links: int


def run(max_peers: int, joiners: int, seed: int, *, shed: bool = True) -> RunResult:
    sim = saturated(max_peers, random.Random(seed), shed=shed)
    assert {len(peers) for peers in sim.links.values()} == {sim.bound}
    sim.now = STABLE_CONNECTION_S  # the mesh formed a while ago
    locked_out = 0
    first = len(sim.links)
    for joiner in range(first, first + joiners):
        sim.now += sim.rng.uniform(0.0, STABLE_CONNECTION_S)  # some close together
        sim.join(joiner)
        if not sim.has_content(joiner):
            sim.now += STABLE_CONNECTION_S  # refused by all: retried once links settled
            sim.join(joiner)
        sim.settle()
        locked_out += not sim.has_content(joiner)
    return RunResult(locked_out, not sim.connected(), sim.most_links)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-peers", type=int, nargs="+", default=[1, 2, 3, 8])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--joiners", type=int, default=12)
    parser.add_argument("--no-save", action="store_true", help="Print only.")
    args = parser.parse_args()
    rows = []
    print("rule | max_peers | runs | joiners locked out | runs ending split | most links (bound)")
    for shed, max_peers in [(shed, m) for shed in (False, True) for m in args.max_peers]:
        results = [run(max_peers, args.joiners, seed, shed=shed) for seed in range(args.runs)]
        row = {
            "rule": "shed for a newcomer" if shed else "refuse when full",
            "max_peers": max_peers,
            "runs": args.runs,
            "joiners_per_run": args.joiners,
            "locked_out": sum(r.locked_out for r in results),
            "split_runs": sum(r.split for r in results),
            "most_links": max(r.most_links for r in results),
            "bound": member_bound(max_peers, joining=True),
        }
        rows.append(row)
        print(
            f"{row['rule']} | {max_peers} | {args.runs} | {row['locked_out']} | "
            f"{row['split_runs']} | {row['most_links']} ({row['bound']})"
        )
    if not args.no_save:
        JSON_PATH.parent.mkdir(exist_ok=True)
        JSON_PATH.write_text(json.dumps({"benchmark": "sim-joins", "rows": rows}, indent=1) + "\n")
        print(f"saved {JSON_PATH.relative_to(REPO_ROOT)}")
    if any(row["locked_out"] for row in rows if row["rule"] == "shed for a newcomer"):
        sys.exit(1)


if __name__ == "__main__":
    main()
