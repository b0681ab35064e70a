"""scripts/sim_mesh.py at small scale: real PeerSync and pycrdt docs over a lossy, churning
partial mesh converge, with every edit exactly once and no gossip loop."""

from __future__ import annotations

import pytest
from pycrdt import Text

from p2prtc.core.model import cells_of
from scripts.sim_mesh import MeshSim, SimConfig, Traffic, simulate

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("seed", [1, 2])
def test_lossy_churning_partial_mesh_converges_exactly_once(seed: int) -> None:
    config = SimConfig(peers=30, degree=4, edits=60, loss=0.02, churn=0.03, seed=seed)
    result = simulate(config)
    # The run really was a partial mesh with broken links and peers away.
    assert result.mean_degree < 5
    assert result.lost_messages > 0 and result.offline_events > 0
    assert result.messages[Traffic.ANTI_ENTROPY.value] > 0
    assert sum(result.edits_by_kind.values()) == config.edits
    assert result.converged
    assert result.exactly_once
    assert result.quiescent
    assert result.coverage[-1] == 1.0
    assert all(len(rounds) == len(result.reach["100%"]) for rounds in result.reach.values())
    assert 0 <= result.rounds_to_converge < config.max_rounds


def test_exactly_once_check_catches_a_duplicated_line() -> None:
    sim = MeshSim(SimConfig(peers=8, degree=3, edits=10, loss=0.0, churn=0.0))
    result = sim.run()
    assert result.converged and result.exactly_once
    doc = sim.peers[3].doc
    line = next(line for line in sim.expected.typed if line not in sim.expected.deleted)
    (cell,) = (cell for cell in cells_of(doc) if cell["id"] == sim.expected.typed[line])
    source: Text = cell["source"]
    assert line in str(source)
    source.insert(0, line)  # the same line twice: what a relay bug or a bad merge would do
    assert not sim.check_exactly_once(doc)
    assert sim.check_exactly_once(sim.peers[2].doc)


def test_without_loss_or_churn_nothing_is_repaired() -> None:
    result = simulate(SimConfig(peers=20, degree=4, edits=20, loss=0.0, churn=0.0))
    assert result.converged and result.exactly_once and result.quiescent
    assert result.lost_messages == 0 and result.offline_events == 0
    # Only the initial sessions ran anti-entropy: one SyncStep1 and one SyncStep2 each way.
    assert result.connections == round(result.mean_degree * 20 / 2)
    assert result.messages[Traffic.ANTI_ENTROPY.value] == 4 * result.connections
