"""The Poller's threads: one per target, polling it on its schedule and applying its
callbacks between polls until told to stop; the threads of dropped or replaced targets,
ending, that stop() still waits for; the discovery thread.

Threads: the thread bookkeeping is changed by the Poller's start(), its reload thread and its
discovery thread, under the Poller's `_reload_lock`. Each poll thread owns its TargetPoller
(exporter.poll.target); others only set its `stopping` and `wake` events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from exporter.board import TargetId, target_id
from exporter.poll.target import TargetPoller

MAX_WAIT = 86400.0  # Event.wait overflows on absurd delays; config caps the interval anyway

OnTarget = Callable[[TargetPoller], None]


class PollThreads:
    """The thread of every target polled, those of targets dropped, still ending, and the
    discovery thread."""

    def __init__(self, poll: OnTarget, apply_callbacks: OnTarget) -> None:
        """`poll` polls a target once, publishes and saves it; `apply_callbacks` applies what
        callbacks reported of it meanwhile."""
        self._poll = poll
        self._apply_callbacks = apply_callbacks
        self._threads: dict[TargetId, tuple[TargetPoller, threading.Thread]] = {}
        self._retiring: list[threading.Thread] = []
        self._discovery: threading.Thread | None = None
        self.running = False

    def retire(self, dropped: list[TargetPoller], pollers: dict[TargetId, TargetPoller]) -> None:
        """Tell the threads of the targets dropped to end; `pollers` are the targets now."""
        for poller in dropped:
            halt(poller)
            tid = target_id(poller.target)
            running = self._threads.get(tid)
            if running is None or running[0] is not poller:
                poller.close()  # no thread of its own to close it
            elif tid not in pollers:  # gone: its thread ends, and nothing holds it
                del self._threads[tid]
                self._retiring.append(running[1])
        self._retiring = [thread for thread in self._retiring if thread.is_alive()]

    def start(self, pollers: dict[TargetId, TargetPoller]) -> None:
        """A thread for every target that has none of its own yet."""
        for tid, poller in pollers.items():
            running = self._threads.get(tid)
            if running is not None and running[0] is poller:
                continue
            if running is not None and running[1].is_alive():
                self._retiring.append(running[1])  # a replaced target's, ending: stop() waits
            thread = threading.Thread(
                target=self._run, args=(poller,), name=f"poll-{poller.name}", daemon=True
            )
            self._threads[tid] = (poller, thread)
            thread.start()

    def start_discovery(self, run: Callable[[], None]) -> None:
        """The discovery thread, running `run`, once."""
        if self._discovery is None:
            self._discovery = threading.Thread(target=run, name="discovery", daemon=True)
            self._discovery.start()

    def all(self) -> list[threading.Thread]:
        """Every thread started and not known to have ended."""
        threads = [thread for _, thread in self._threads.values()] + self._retiring
        if self._discovery is not None:
            threads.append(self._discovery)
        return threads

    def _run(self, poller: TargetPoller) -> None:
        next_run = time.monotonic()
        try:
            while not poller.stopping.is_set():
                self._poll(poller)
                next_run += poller.config.poll_interval
                if next_run < time.monotonic():  # a poll overran: again now, no catching up
                    next_run = time.monotonic()
                while not poller.stopping.is_set():
                    poller.wake.clear()
                    self._apply_callbacks(poller)
                    delay = next_run - time.monotonic()
                    if delay <= 0 or not poller.wake.wait(min(delay, MAX_WAIT)):
                        break  # the poll is due (a callback only wakes it to be applied)
        finally:
            poller.close()


def halt(poller: TargetPoller) -> None:
    """Tell a target's thread to end, at once, whatever it is waiting for."""
    poller.stopping.set()
    poller.wake.set()
