"""The snapshot /metrics reads: one TargetSnapshot per target the running configuration polls,
the reload status and discovery's, swapped whole.

Threads: written by the poll threads, the reload thread and the discovery thread under
Board's lock; read without it (`current` is a reference swap).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from exporter.config import TargetConfig
from exporter.poll.target import TargetPoller
from exporter.snapshot import DiscoveryStatus, ReloadStatus, Snapshot, TargetSnapshot

TargetId = tuple[str, str]  # (bucket, region)
Clock = Callable[[], float]


def target_id(target: TargetConfig) -> TargetId:
    return (target.bucket, target.region)


class Board:
    """The snapshot /metrics reads, swapped whole: one TargetSnapshot per target the running
    configuration polls, and the reload status. Written by the poll threads and the reload
    thread under its lock; read without it (a reference swap)."""

    def __init__(self, clock: Clock) -> None:
        self._lock = threading.Lock()
        self._owners: dict[TargetId, TargetPoller] = {}
        self._snapshots: dict[TargetId, TargetSnapshot] = {}
        self.reload = ReloadStatus(True, clock())
        self.discovery: tuple[DiscoveryStatus, ...] = ()
        self.current = Snapshot()
        # Told of every swap (exporter.exposition renders the new snapshot); under the lock.
        self.on_swap: Callable[[], None] = _nothing

    def set_targets(self, pollers: dict[TargetId, TargetPoller]) -> None:
        """The targets now polled, in order; a new one shows its empty snapshot at once."""
        with self._lock:
            self._owners = dict(pollers)
            self._snapshots = {
                tid: self._snapshots.get(tid) or p.snapshot() for tid, p in pollers.items()
            }
            self._swap()

    def owners(self) -> list[TargetPoller]:
        """The targets polled now (any thread)."""
        with self._lock:
            return list(self._owners.values())

    def set_reload(self, status: ReloadStatus) -> None:
        with self._lock:
            self.reload = status
            self._swap()

    def set_discovery(self, statuses: tuple[DiscoveryStatus, ...]) -> None:
        with self._lock:
            if statuses != self.discovery:
                self.discovery = statuses
                self._swap()

    def publish(self, poller: TargetPoller) -> None:
        """Swap in a target's new snapshot, unless a reload removed or replaced it meanwhile."""
        target_snapshot = poller.snapshot()
        with self._lock:
            if self._owners.get(target_id(poller.target)) is not poller:
                return
            self._snapshots[target_id(poller.target)] = target_snapshot
            self._swap()

    def _swap(self) -> None:
        self.current = Snapshot(
            targets=tuple(self._snapshots[tid] for tid in self._owners),
            reload=self.reload,
            discovery=self.discovery,
        )
        self.on_swap()


def _nothing() -> None:
    pass
