"""An idle daemon gives freed memory back: the trim policy (no loop, no clock), glibc's
malloc_trim on this very process, and a real daemon after saves of a notebook with images."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import edit_cell, memory_mib, synced_pair, wait_until

from p2prtc.adapters.heap import HeapTrimmer, anonymous_rss_bytes
from p2prtc.daemon.memory import GROWTH_BYTES, QUIET_CPU_S, TrimPolicy

MIB = 2**20
BIG_SAMPLE = "kmeans.ipynb"  # 1.8 MB, PNG outputs up to 0.6 MB each


def test_policy_trims_after_growth_once_quiet() -> None:
    policy = TrimPolicy(100 * MIB)
    grown = 100 * MIB + GROWTH_BYTES + MIB
    assert not policy.due(grown, interval_cpu_s=QUIET_CPU_S * 4), "trimmed in a burst of work"
    assert policy.due(grown, interval_cpu_s=0.0)


def test_policy_leaves_an_idle_daemon_alone() -> None:
    policy = TrimPolicy(100 * MIB)
    assert not policy.due(100 * MIB + GROWTH_BYTES // 2, interval_cpu_s=0.0)
    # Growth is counted from the lowest RSS seen: a dip and the same growth again.
    assert not policy.due(90 * MIB, interval_cpu_s=0.0)
    assert policy.due(90 * MIB + GROWTH_BYTES + MIB, interval_cpu_s=0.0)


def test_policy_does_not_trim_again_for_memory_in_use() -> None:
    policy = TrimPolicy(100 * MIB)
    in_use = 100 * MIB + 3 * GROWTH_BYTES  # a share opened: the trim could not give it back
    assert policy.due(in_use, interval_cpu_s=0.0)
    policy.trimmed(in_use)
    assert not policy.due(in_use, interval_cpu_s=0.0)
    assert not policy.due(in_use + GROWTH_BYTES // 2, interval_cpu_s=0.0)


def test_trim_gives_freed_heap_back() -> None:
    trimmer = HeapTrimmer.load()
    assert trimmer is not None, "glibc's malloc_trim not found (this runs on Debian)"
    # Many medium blocks (above pymalloc's 512 bytes, below mmap's threshold), one in 64
    # kept: what parsing a notebook and freeing it leaves in the heap.
    blocks = [bytes(40_000 + index) for index in range(2000)]
    kept = blocks[::64]
    del blocks
    before = anonymous_rss_bytes()
    trimmer.trim()
    assert before - anonymous_rss_bytes() > 30 * MIB
    assert len(kept) == 32


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_idle_daemon_gives_memory_back_after_writes(tmp_path: Path, notebooks_dir: Path) -> None:
    """B writes each of A's saves of a 1.7 MB notebook; once idle, B's RSS falls back
    well below its peak (without trimming, glibc keeps the freed pages: RSS stays near it)."""
    with synced_pair(tmp_path, notebooks_dir / BIG_SAMPLE) as pair:
        pid = pair.b.pid()
        for save in range(12):  # each a parse, a render and a version of 1.7 MB on B
            line = f"# save {save}"
            edit_cell(pair.a_file, 0, line)
            wait_until(lambda line=line: pair.converged_with(line), 60, f"B to write {line}")
        wait_until(
            lambda: memory_mib(pid)["VmRSS"] <= memory_mib(pid)["VmHWM"] - 16,
            60,
            "the idle daemon to give freed memory back",
        )
