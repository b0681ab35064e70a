"""Soak the convergence property with cell moves: many seeded runs, every failure by seed.

    .venv/bin/python scripts/soak_moves.py [--first 0] [--runs 1000] [--no-moves] [--files]
                                           [--long] [--out F.json]
    .venv/bin/python scripts/soak_moves.py --first 758 --runs 1      # replay one seed

Each run is ``tests/test_convergence.py``'s, its model imported from ``tests/convergence.py``
(2 to 5 replicas, up to 25 random saves and deliveries, then everyone gets everything,
repairs included) with its random choices drawn from ``random.Random(seed)`` instead of
hypothesis, and client ids from the seed too: a seed replays exactly. The edit mix is the
moves test's (type, delete a line, insert, delete and move cells, outputs), or without moves.
``--files``: each replica is the daemon's SharedFile over a real file and sqlite update log
(recall of older versions from the log, history bounds, compaction after a few updates)
instead of the bare engine. ``--long``: long stale runs (up to 90 steps, editors that reload
after 15 % of the daemon's writes, as
``test_editors_that_rarely_reload_save_from_versions_older_than_those_kept_whole``). Each run is
checked as the strict property test checks it (converged, valid, ids once, nothing lost,
nothing doubled); failures are listed by kind with their seeds. Prints a summary and saves
JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tests import convergence

# Long stale runs: more steps, editors that seldom reload (the shape of the long property test).
LONG: dict[str, Any] = {"steps": 90, "reloads": 0.15}


def soak(first: int, runs: int, moves: bool, files: bool, long: bool = False) -> dict[str, Any]:
    edits = convergence.MOVES if moves else convergence.EDITS
    failures: dict[str, list[int]] = {}
    started = time.perf_counter()
    for seed in range(first, first + runs):
        try:
            with tempfile.TemporaryDirectory() as folder:
                data = convergence.SeededData(seed)
                world = convergence.run(
                    data,  # type: ignore[arg-type]
                    edits,
                    folder=Path(folder) if files else None,
                    **(LONG if long else {}),
                )
                convergence.check(world)
        except AssertionError as exc:
            failures.setdefault(str(exc).split("\n")[0], []).append(seed)
    failed = sum(len(seeds) for seeds in failures.values())
    return {
        "first_seed": first,
        "runs": runs,
        "moves": moves,
        "files": files,
        "long": long,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--no-moves", action="store_true")
    parser.add_argument("--files", action="store_true", help="replicas are SharedFiles")
    parser.add_argument("--long", action="store_true", help="long runs, stale editors")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = soak(args.first, args.runs, not args.no_moves, args.files, args.long)
    print(
        f"{result['runs']} runs from seed {result['first_seed']}, moves={result['moves']}, "
        f"files={result['files']}, long={result['long']}:"
    )
    print(f"  {result['failed']} failed ({100 * result['failed'] / result['runs']:.1f} %)")
    print(f"  in {result['seconds']} s")
    for kind, seeds in sorted(result["failures"].items()):
        print(f"  {kind}: seeds {seeds}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
