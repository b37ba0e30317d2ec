"""Every target on a thread of its own: its polls on schedule, its snapshot swapped in for
/metrics, its state saved; reloads handed to the targets; a prompt, whole stop.

Threads: each target's poll thread owns its TargetPoller (exporter.poll.target). The reload
thread (SIGHUP, POST /-/reload) and the discovery thread (exporter.poll.discovery: the buckets
it finds are targets too) change `config` and the set of targets under `_reload_lock`;
the snapshot for /metrics is swapped by `Board` under its lock and read without it. /metrics
never calls the API: it reads the last snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.accounting import RECENT_FAILURES, CodeLimiter
from exporter.api_stats import ApiStats
from exporter.board import Board, TargetId, target_id
from exporter.ci.client import QUEUE_PAGE_SIZE, CIClient
from exporter.ci.discovery import DiscoveryClient, service_endpoint
from exporter.config import Config, DiscoveryConfig, TargetConfig
from exporter.poll.clients import SharedClients, build_client, build_discovery_client
from exporter.poll.discovery import BucketEndpoint, Discoverer, public_endpoint
from exporter.poll.discovery import ClientFactory as DiscoveryClientFactory
from exporter.poll.pipeline import PollError
from exporter.poll.target import TargetPoller
from exporter.sharding import ALL, Shard, select
from exporter.snapshot import (
    FailedJob,
    ReloadStatus,
    Snapshot,
)
from exporter.state import StateFile, TargetState

if TYPE_CHECKING:
    from exporter.ci.callback import CallbackEvent

log = logging.getLogger(__name__)

Clock = Callable[[], float]
ClientFactory = Callable[[TargetConfig, Config, ApiStats], CIClient]

MAX_WAIT = 86400.0  # Event.wait overflows on absurd delays; config caps the interval anyway
STOP_TIMEOUT = 1.5  # seconds stop() waits for poll threads (a state save) to end
# The owner, in the state file, of a saved target that discovery has not found again yet.
UNCLAIMED = object()


def wall_clock() -> float:
    # Looked up at each call, not bound at import, so that freezegun can move it in tests.
    return time.time()


class Poller:
    """Every target, each on its own thread and schedule; the latest snapshot for /metrics."""

    def __init__(
        self,
        config: Config,
        stats: ApiStats,
        *,
        clock: Clock | None = None,
        client_factory: ClientFactory | None = None,
        shard: Shard = ALL,
        queue_page_size: int = QUEUE_PAGE_SIZE,
        discovery_client_factory: DiscoveryClientFactory | None = None,
        bucket_endpoint: BucketEndpoint = public_endpoint,
        service_endpoint: Callable[[str], str] = service_endpoint,
    ) -> None:
        """`client_factory` and `discovery_client_factory` replace the built-in clients
        (tests); the built-in ones share a credential provider and a rate limit per set of
        credentials. `bucket_endpoint` gives a discovered bucket's endpoint, `service_endpoint`
        a region's service host (the simulator's listeners in tests and the demo)."""
        self.stats = stats
        self.clock = clock or wall_clock
        self.client_factory = client_factory
        self.queue_page_size = queue_page_size
        self._shared = SharedClients()
        self.shard = shard
        self.config = config
        self.codes = CodeLimiter(config.failure_code_limit)
        self._stop = threading.Event()
        self.board = Board(self.clock)
        self._reload_lock = threading.Lock()
        self._pollers: dict[TargetId, TargetPoller] = {}
        self._threads: dict[TargetId, tuple[TargetPoller, threading.Thread]] = {}
        self._running = False
        self._retiring: list[threading.Thread] = []
        self._discovery_thread: threading.Thread | None = None
        self._discovery_wake = threading.Event()  # a reload, or stop()
        self._ready = False
        self._started = self.clock()
        self._service_endpoint = service_endpoint
        self.discoverer = Discoverer(
            config,
            discovery_client_factory or self._discovery_client,
            clock=self.clock,
            bucket_endpoint=bucket_endpoint,
        )
        # Saved targets no configured target is: discovery may find them again.
        self._unclaimed: dict[str, tuple[TargetState, deque[FailedJob]]] = {}
        self.state_file = StateFile(config.state_file) if config.state_file else None
        self._apply(config)
        if self.state_file is not None:
            self._unclaimed = restore(self.state_file, self.targets, self.codes)
            if config.discovery:
                self._keep_unclaimed(self.state_file)
            else:
                self._unclaimed.clear()

    @property
    def targets(self) -> list[TargetPoller]:
        return list(self._pollers.values())

    # -- targets and reload ---------------------------------------------------------------

    def _client_builder(
        self, stopping: threading.Event
    ) -> Callable[[TargetConfig, Config], CIClient]:
        """How a target's thread builds its client: with the request gates of the rate limit
        in force when it builds (a reload that changed the rate limit made new ones)."""

        def build(target: TargetConfig, config: Config) -> CIClient:
            if self.client_factory is not None:
                return self.client_factory(target, config, self.stats)
            return build_client(
                target,
                config,
                self.stats,
                shared=self._shared,
                stopping=stopping,
                queue_page_size=self.queue_page_size,
            )

        return build

    def _discovery_client(
        self, entry: DiscoveryConfig, region: str, config: Config
    ) -> DiscoveryClient:
        return build_discovery_client(
            entry,
            region,
            config,
            self.stats,
            endpoint=self._service_endpoint(region),
            shared=self._shared,
            stopping=self._stop,
        )

    def _new_target(self, target: TargetConfig, config: Config) -> TargetPoller:
        stopping = threading.Event()
        if self._stop.is_set():
            stopping.set()
        saved = self._claim(f"{target.bucket}/{target.region}", target)
        poller = TargetPoller(
            target,
            config,
            build_client=self._client_builder(stopping),
            codes=self.codes,
            clock=self.clock,
            stopping=stopping,
            recent_failures=saved[1] if saved else None,
        )
        if saved is not None:  # found again by discovery after a restart
            poller.restore(saved[0])
        return poller

    def _claim(
        self, name: str, target: TargetConfig
    ) -> tuple[TargetState, deque[FailedJob]] | None:
        """What a previous process saved of a target discovery found again; it stays to be
        claimed while the save has services the target is not polled for yet."""
        saved = self._unclaimed.get(name)
        if saved is not None and set(saved[0].services) <= {s.name for s in target.services}:
            del self._unclaimed[name]
        return saved

    def _keep_unclaimed(self, state_file: StateFile) -> None:
        """Until discovery has listed every bucket once, the saved targets it may find again
        stay in the file as they were."""
        self._retain(state_file, self._pollers)
        for name, (state, _) in self._unclaimed.items():
            state_file.save(name, state, owner=UNCLAIMED)

    def _apply(self, config: Config) -> list[TargetPoller]:
        """Make the targets those of `config` (this shard's share); return the ones dropped.
        Targets kept are offered the new configuration; their threads take it up."""
        pollers: dict[TargetId, TargetPoller] = {}
        self.discoverer.reconfigure(config)
        targets = config.targets + self.discoverer.targets()
        for target in select(targets, self.shard):
            if self._stop.is_set():
                raise _Stopping  # stop() waits for this lock: building the rest is no use
            current = self._pollers.get(target_id(target))
            if current is None or current.target.endpoint != target.endpoint:
                pollers[target_id(target)] = self._new_target(target, config)
            else:  # same bucket at the same address: its streams keep their accounting
                saved = self._claim(current.name, target)
                current.offer(target, config, saved[0] if saved else None)
                pollers[target_id(target)] = current
        dropped = [p for tid, p in self._pollers.items() if pollers.get(tid) is not p]
        if self._unclaimed and self._unclaimed_expired(config):
            self._unclaimed.clear()  # saved, listed by no discovery: gone, as if removed
        if config.state_file != (self.state_file.path if self.state_file else None):
            # Saves go to the new file from the next poll of each target on.
            self.state_file = StateFile(config.state_file) if config.state_file else None
        if self.state_file is not None:
            # Before anything else sees the new set: a save of a dropped target, wherever it
            # stands, can no longer put it back in the file.
            self._retain(self.state_file, pollers)
        self._pollers = pollers
        self.board.set_targets(pollers)
        self.config = config
        self.codes.limit = config.failure_code_limit
        return dropped

    def _unclaimed_expired(self, config: Config) -> bool:
        """Saved targets that discovery has not found again are dropped once every listing
        has succeeded and the longest grace has passed since start, as a bucket missing that
        long from the listings would have been."""
        grace = max((entry.grace for entry in config.discovery), default=0.0)
        return self.discoverer.settled() and self.clock() - self._started >= grace

    def _retain(self, state_file: StateFile, pollers: dict[TargetId, TargetPoller]) -> None:
        owners: dict[str, object] = dict.fromkeys(self._unclaimed, UNCLAIMED)
        state_file.retain({**owners, **{p.name: p for p in pollers.values()}})

    def reload(self, config: Config) -> None:
        """Swap in a new, valid configuration. Unchanged targets keep everything; changed ones
        keep the accounting of the streams they still poll; removed ones stop."""
        with self._reload_lock:
            self._take_up(config)
            self.board.set_reload(ReloadStatus(True, self.clock()))
            log.info("configuration reloaded", extra={"targets": len(self._pollers)})

    def _take_up(self, config: Config) -> None:
        """Under `_reload_lock`: the targets of `config` and of discovery polled from now."""
        try:
            dropped = self._apply(config)
        except _Stopping:
            return
        for poller in dropped:
            halt(poller)
            tid = target_id(poller.target)
            running = self._threads.get(tid)
            if running is None or running[0] is not poller:
                poller.close()  # no thread of its own to close it
            elif tid not in self._pollers:  # gone: its thread ends, and nothing holds it
                del self._threads[tid]
                self._retiring.append(running[1])
        self._retiring = [thread for thread in self._retiring if thread.is_alive()]
        self.board.set_discovery(self.discoverer.statuses())
        self._discovery_wake.set()  # a new or changed entry is listed now, not at the old time
        if self._running:
            self._start_threads()

    def discover(self, stopping: threading.Event | None = None) -> None:
        """List the buckets of every discovery entry that is due and poll what was found
        (the discovery thread; tests and --once call it directly)."""
        changed = self.discoverer.run_due(stopping)
        with self._reload_lock:
            if changed or self._unclaimed:
                self._take_up(self.config)
                self._discovery_wake.clear()  # it listed just now
                log.info("discovered targets changed", extra={"targets": len(self._pollers)})
            self.board.set_discovery(self.discoverer.statuses())

    def _run_discovery(self) -> None:
        while not self._stop.is_set():
            self._discovery_wake.clear()
            try:
                self.discover(self._stop)
            except Exception:  # a bug: logged; the targets found so far are still polled
                log.exception("unexpected error in bucket discovery")
            due = self.discoverer.next_due()
            delay = MAX_WAIT if due is None else max(0.0, due - time.monotonic())
            self._discovery_wake.wait(min(delay, MAX_WAIT))

    def reload_failed(self) -> None:
        self.board.set_reload(ReloadStatus(False, self.board.reload.last_success_time))

    # -- the snapshot ---------------------------------------------------------------------

    def _publish(self, poller: TargetPoller) -> None:
        self.board.publish(poller)

    def snapshot(self) -> Snapshot:
        return self.board.current

    def ready(self) -> bool:
        """Every target polled once, discovery's first round included: latched, so that a
        reload adding targets does not take a serving replica out of its Service."""
        if not self._ready:
            polled = all(t.polled for t in self.board.current.targets)
            self._ready = polled and self.discoverer.tried()
        return self._ready

    # -- running --------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Discover what is due, then poll every target once, in turn (tests, --once)."""
        if self.config.discovery:
            self.discover()
        for poller in self.targets:
            self._poll_target(poller)

    def _poll_target(self, poller: TargetPoller) -> None:
        """Take up any reload, poll, publish, then save: the state file is never ahead of
        what was published, and follows whatever was. Any exception is logged (once per kind)
        and marks the target down with reason `internal`; the thread goes on."""
        try:
            poller.take_offer()
            poller.poll()
        except Exception as error:  # streams committed before it are published and saved
            internal_error(poller, "polling", error)
        try:
            self._publish(poller)
        except Exception as error:
            self._internal_error(poller, "publishing", error)
            return  # not saved: the file must not be ahead of /metrics
        state_file = self.state_file
        if state_file is not None:
            try:
                state_file.save(poller.name, poller.state(), owner=poller)
            except Exception as error:
                self._internal_error(poller, "saving the state of", error)

    def _internal_error(self, poller: TargetPoller, doing: str, error: Exception) -> None:
        internal_error(poller, doing, error)
        try:
            self._publish(poller)
        except Exception:  # the snapshot itself fails: /metrics keeps the last one
            log.debug("cannot publish the target's health", exc_info=True)

    def start(self) -> None:
        with self._reload_lock:
            self._running = True
            self._start_threads()
            if self._discovery_thread is None:
                self._discovery_thread = threading.Thread(
                    target=self._run_discovery, name="discovery", daemon=True
                )
                self._discovery_thread.start()

    def _start_threads(self) -> None:
        for tid, poller in self._pollers.items():
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

    def _run(self, poller: TargetPoller) -> None:
        next_run = time.monotonic()
        try:
            while not poller.stopping.is_set():
                self._poll_target(poller)
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

    # -- callbacks ------------------------------------------------------------------------

    def deliver(self, bucket: str | None, event: CallbackEvent) -> str:
        """A callback from the receiver (its worker thread): queued for its target's poll
        thread ("queued"), or what became of it here (exporter.callback_stats.OUTCOMES, or
        "overloaded"). Without a bucket in the callback's URL, the target is the one whose
        last listing had the job's queue or the run's workflow."""
        if event.job is None:
            return "unknown_event"
        targets = self.board.owners()
        if bucket is not None:
            found = [p for p in targets if p.target.bucket == bucket]
        else:
            found = [p for p in targets if p.streams.service_of(event.job.queue_id) is not None]
        if len(found) != 1:
            return "unknown_target"
        return "queued" if found[0].callbacks.deliver(event) else "overloaded"

    def _apply_callbacks(self, poller: TargetPoller) -> None:
        """On the target's thread: count what callbacks reported, and publish at once."""
        if poller.callbacks.apply_queued(self.clock(), self.stats.callbacks.received):
            stamp = poller.callbacks.last_time
            if stamp is not None:
                self.stats.callbacks.last_callback(
                    poller.target.bucket, poller.target.region, stamp
                )
            try:
                self._publish(poller)
            except Exception as error:
                self._internal_error(poller, "publishing", error)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every poll and wait up to `timeout` for the threads: a poll in flight is cut
        short uncommitted, a save in progress is let finish (the threads are daemons, so a
        call that ignores its timeout cannot hold the exit beyond this)."""
        self._stop.set()
        self._discovery_wake.set()
        with self._reload_lock:
            pollers = list(self._pollers.values())
            threads = [thread for _, thread in self._threads.values()] + self._retiring
            if self._discovery_thread is not None:
                threads.append(self._discovery_thread)
        for poller in pollers:
            halt(poller)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for poller in pollers:
            poller.close()


class _Stopping(Exception):
    """stop() came while the targets were being built."""


def halt(poller: TargetPoller) -> None:
    """Tell a target's thread to end, at once, whatever it is waiting for."""
    poller.stopping.set()
    poller.wake.set()


def restore(
    state_file: StateFile, pollers: list[TargetPoller], codes: CodeLimiter
) -> dict[str, tuple[TargetState, deque[FailedJob]]]:
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

    unclaimed: dict[str, tuple[TargetState, deque[FailedJob]]] = {}
    for name, state in state_file.load(codes, recent_failures).items():
        if name in by_name:
            by_name[name].restore(state)
            state_file.save(name, by_name[name].state(), owner=by_name[name])
        else:
            unclaimed[name] = (state, orphans.setdefault(name, deque(maxlen=RECENT_FAILURES)))
    return unclaimed


def internal_error(poller: TargetPoller, doing: str, error: Exception) -> None:
    """A bug met while `doing` (polling, saving): logged with its traceback once per kind and
    target, then at debug level; the target reports down with reason `internal`."""
    kind = f"{doing}:{type(error).__name__}"
    message = f"unexpected error {doing} target"
    if kind in poller.internal_errors:
        log.debug(message, exc_info=True, extra={"target": poller.name})
    else:
        poller.internal_errors.add(kind)
        log.exception(message, extra={"target": poller.name})
    poller.set_health(PollError("internal", f"internal error {doing} the target"))
