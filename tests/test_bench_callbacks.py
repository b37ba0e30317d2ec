"""The callbacks benchmark (bench/callbacks.py) runs end to end at a tiny size: both exporters
see every failure, and the callback one without waiting for a poll. Its numbers are for
docs/benchmarks.md, not for assertions on time."""

from __future__ import annotations

from bench.callbacks import run


def test_both_sides_see_every_failure_and_polls_cost_calls() -> None:
    sides, polling = run(interval=1.5, failures=2)
    assert [len(side.latencies) for side in sides] == [2, 2]
    assert polling["polls"] >= 1
    # 1 queue listing and, per tag, the active and the finished listings: 7 calls.
    assert polling["calls_per_poll"] >= 7
