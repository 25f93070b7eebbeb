"""The bare-pipes baseline of the fleet figure: real spawned processes, each reached per round."""

from __future__ import annotations

import pytest

from dspex.bench._bare_fleet import BareFleet

pytestmark = pytest.mark.timeout(60)


def test_a_round_reaches_every_bare_worker_once_and_close_ends_them() -> None:
    with BareFleet(3) as fleet:
        processes = list(fleet._processes)
        assert all(process.is_alive() for process in processes)
        for linger in (0.0, 0.05):
            reads = fleet.round(linger)
            assert len(reads) == 3
            assert all(0 < ms < 10_000 for ms in reads)
    assert not any(process.is_alive() for process in processes)
    assert {process.exitcode for process in processes} == {0}  # stopped, not killed
