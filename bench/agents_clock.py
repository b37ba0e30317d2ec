"""An agent process's clock (bench/agents.py): frozen at an instant the parent moves, so that
both sides of every request agree on the time, or the real one."""

from __future__ import annotations

from datetime import datetime, timezone

from freezegun import freeze_time


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


class Frozen:
    """This process's clock: frozen at an instant the parent moves, or the real one."""

    def __init__(self, at: float | None) -> None:
        self._freezer = freeze_time(_utc(at)) if at is not None else None
        self._frozen = self._freezer.start() if self._freezer is not None else None

    def move_to(self, at: float | None) -> None:
        if self._frozen is not None and at is not None:
            self._frozen.move_to(_utc(at))

    def stop(self) -> None:
        if self._freezer is not None:
            self._freezer.stop()
            self._freezer = self._frozen = None
