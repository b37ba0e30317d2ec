"""What a previous process saved of the targets, and the state file this one saves them to:
the saved state handed back to each target at start, the saved targets discovery may find
again (claimed by the target built for them), and which targets the file keeps.

Threads: `file` and `unclaimed` are changed by the Poller's constructor, its reload thread and
its discovery thread, under the Poller's `_reload_lock`; the poll threads read `file` without
it (a reference swap) and save through StateFile, which has a lock of its own.
"""

from __future__ import annotations

from collections import deque

from exporter.board import TargetId
from exporter.config import TargetConfig
from exporter.poll.target import TargetPoller
from exporter.snapshot import FailedJob
from exporter.state import StateFile, TargetState
from exporter.stream_counts import RECENT_FAILURES, CodeLimiter

# The owner, in the state file, of a saved target that discovery has not found again yet.
UNCLAIMED = object()

Saved = tuple[TargetState, deque[FailedJob]]


class SavedTargets:
    """The state file of the running configuration (None without one) and the saved targets
    no target polled now is."""

    def __init__(self, path: str | None) -> None:
        self.file = StateFile(path) if path else None
        # Saved targets no configured target is: discovery may find them again.
        self.unclaimed: dict[str, Saved] = {}

    def load(
        self, pollers: dict[TargetId, TargetPoller], codes: CodeLimiter, discovery: bool
    ) -> None:
        """At start: each target takes back what was saved of it; the other saved targets wait
        for discovery to find them again, or are dropped without discovery."""
        if self.file is not None:
            self.unclaimed = restore(self.file, list(pollers.values()), codes)
            if discovery:
                self.keep_unclaimed(self.file, pollers)
            else:
                self.unclaimed.clear()

    def claim(self, name: str, target: TargetConfig) -> Saved | None:
        """What a previous process saved of a target discovery found again; it stays to be
        claimed while the save has services the target is not polled for yet."""
        saved = self.unclaimed.get(name)
        if saved is not None and set(saved[0].services) <= {s.name for s in target.services}:
            del self.unclaimed[name]
        return saved

    def keep_unclaimed(self, state_file: StateFile, pollers: dict[TargetId, TargetPoller]) -> None:
        """Until discovery has listed every bucket once, the saved targets it may find again
        stay in the file as they were."""
        self.retain(state_file, pollers)
        for name, (state, _) in self.unclaimed.items():
            state_file.save(name, state, owner=UNCLAIMED)

    def follow(self, path: str | None) -> None:
        """The state file of a new configuration."""
        if path != (self.file.path if self.file else None):
            # Saves go to the new file from the next poll of each target on.
            self.file = StateFile(path) if path else None

    def retain(self, state_file: StateFile, pollers: dict[TargetId, TargetPoller]) -> None:
        owners: dict[str, object] = dict.fromkeys(self.unclaimed, UNCLAIMED)
        state_file.retain({**owners, **{p.name: p for p in pollers.values()}})


def restore(
    state_file: StateFile, pollers: list[TargetPoller], codes: CodeLimiter
) -> dict[str, Saved]:
    """Hand each target what a previous process saved of it, and keep it in the file: until
    a target's first save the file would otherwise hold only the targets saved since. The
    saved targets no poller is, with the recent failures their trackers were read with."""
    by_name = {poller.name: poller for poller in pollers}
    orphans: dict[str, deque[FailedJob]] = {}

    def recent_failures(name: str) -> deque[FailedJob]:
        poller = by_name.get(name)
        if poller is not None:
            return poller.recent_failures
        return orphans.setdefault(name, deque(maxlen=RECENT_FAILURES))

    unclaimed: dict[str, Saved] = {}
    for name, state in state_file.load(codes, recent_failures).items():
        if name in by_name:
            by_name[name].restore(state)
            state_file.save(name, by_name[name].state(), owner=by_name[name])
        else:
            unclaimed[name] = (state, orphans.setdefault(name, deque(maxlen=RECENT_FAILURES)))
    return unclaimed
