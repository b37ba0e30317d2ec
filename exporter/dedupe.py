"""One target's view across its streams: the jobs any of its streams counted recently, and
what CI did that it should not have (the same JobId in two queues, a finished job active again).

Owned by the target's poll thread, like the trackers that share it (exporter.poll.streams):
trackers add JobKeys as they commit, the target prunes after each poll; nothing else touches it.

Every stream's tracker remembers the jobs it counted while its own window can still return them
(exporter.accounting's `_seen`); trackers do not see each other, so a JobId that CI lists in
two queues would be counted in both. Here every JobKey a stream counted (or took as its
baseline) is kept with its creation time for as long as the window of *any* stream of the
target can return it: another stream that meets it remembers it as seen and does not count
it, and the anomaly is counted once. Streams whose window lags the target's newest by more
than LAG_LIMIT (a stream failing for an hour while the others succeed) do not hold entries
back: memory stays within about an hour of the target's finished jobs (~100 bytes each).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

JobKey = int | str  # a JobId as held in memory: see exporter.accounting.job_key

DUPLICATE_ID = "duplicate_id"  # a JobId already counted (or the baseline) in another stream
RESURRECTED = "resurrected"  # a finished job (or one older than the window) listed active again
ANOMALY_KINDS: tuple[str, ...] = (DUPLICATE_ID, RESURRECTED)

# How far behind the target's newest window a stream's window may hold entries back.
LAG_LIMIT = 3600.0


class TargetJobIds:
    """JobKey -> creation time of the jobs the target's streams counted; the anomalies seen."""

    __slots__ = ("_counted", "_lowest", "anomalies")

    def __init__(self) -> None:
        self._counted: dict[JobKey, float] = {}
        self._lowest = -float("inf")
        self.anomalies: Counter[str] = Counter()

    def claim(self, key: JobKey, creation: float) -> bool:
        """True when the job may be counted: no stream of the target counted it. False: a
        duplicate JobId (the caller notes it if it would have counted the job)."""
        if key in self._counted:
            return False
        self._counted[key] = creation
        return True

    def note(self, kind: str) -> None:
        self.anomalies[kind] += 1

    def prune(self, window_starts: Iterable[int | None]) -> None:
        """Drop the jobs no stream's window can return any more (see the module)."""
        starts = [start for start in window_starts if start is not None]
        if not starts:
            return
        lowest = max(min(starts), max(starts) - LAG_LIMIT) - 1
        if lowest <= self._lowest:
            return
        self._lowest = lowest
        if self._counted:
            self._counted = {key: t for key, t in self._counted.items() if t >= lowest}

    def __len__(self) -> int:
        return len(self._counted)

    def __contains__(self, key: object) -> bool:
        return key in self._counted
