"""Every target on a thread of its own: its polls on schedule, its snapshot swapped in for
/metrics, its state saved; reloads handed to the targets; a prompt, whole stop. The Poller
ties together the set of targets (exporter.poller_targets), what is saved of them
(exporter.poller_state), their threads (exporter.poller_threads) and the callbacks routed to
them (exporter.poller_callbacks).

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
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.api_stats import ApiStats
from exporter.board import Board
from exporter.ci.client import QUEUE_PAGE_SIZE
from exporter.ci.discovery import DiscoveryClient, service_endpoint
from exporter.config import Config, DiscoveryConfig
from exporter.poll.clients import SharedClients, build_discovery_client
from exporter.poll.discovery import BucketEndpoint, public_endpoint
from exporter.poll.discovery import ClientFactory as DiscoveryClientFactory
from exporter.poll.pipeline import PollError
from exporter.poll.target import TargetPoller
from exporter.poller_callbacks import count_applied, route
from exporter.poller_state import SavedTargets
from exporter.poller_targets import ClientFactory, Stopping, TargetSet
from exporter.poller_threads import MAX_WAIT, PollThreads, halt
from exporter.sharding import ALL, Shard
from exporter.snapshot import ReloadStatus, Snapshot
from exporter.state import StateFile

if TYPE_CHECKING:
    from exporter.ci.callback import CallbackEvent

log = logging.getLogger(__name__)

Clock = Callable[[], float]

STOP_TIMEOUT = 1.5  # seconds stop() waits for poll threads (a state save) to end


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
        self.shard = shard  # exporter.landing shows it
        self._shared = SharedClients()
        self._stop = threading.Event()
        self.board = Board(self.clock)
        self._reload_lock = threading.Lock()
        self._threads = PollThreads(self._poll_target, self._apply_callbacks)
        self._discovery_wake = threading.Event()  # a reload, or stop()
        self._ready = False
        self._service_endpoint = service_endpoint
        self._saved = SavedTargets(config.state_file)
        self._target_set = TargetSet(
            config,
            stats,
            self.board,
            self._saved,
            clock=self.clock,
            client_factory=client_factory,
            shard=shard,
            queue_page_size=queue_page_size,
            shared=self._shared,
            discovery_client_factory=discovery_client_factory or self._discovery_client,
            bucket_endpoint=bucket_endpoint,
        )
        self.discoverer = self._target_set.discoverer
        self._target_set.apply(config, self._stop)
        self._saved.load(self._target_set.pollers, self._target_set.codes, bool(config.discovery))

    @property
    def targets(self) -> list[TargetPoller]:
        return list(self._target_set.pollers.values())

    @property
    def config(self) -> Config:
        return self._target_set.config

    @property
    def state_file(self) -> StateFile | None:
        return self._saved.file

    # -- targets and reload ---------------------------------------------------------------

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

    def reload(self, config: Config) -> None:
        """Swap in a new, valid configuration. Unchanged targets keep everything; changed ones
        keep the accounting of the streams they still poll; removed ones stop."""
        with self._reload_lock:
            self._take_up(config)
            self.board.set_reload(ReloadStatus(True, self.clock()))
            log.info("configuration reloaded", extra={"targets": len(self.targets)})

    def _take_up(self, config: Config) -> None:
        """Under `_reload_lock`: the targets of `config` and of discovery polled from now."""
        try:
            dropped = self._target_set.apply(config, self._stop)
        except Stopping:
            return
        self._threads.retire(dropped, self._target_set.pollers)
        self.board.set_discovery(self.discoverer.statuses())
        self._discovery_wake.set()  # a new or changed entry is listed now, not at the old time
        if self._threads.running:
            self._threads.start(self._target_set.pollers)

    def discover(self, stopping: threading.Event | None = None) -> None:
        """List the buckets of every discovery entry that is due and poll what was found
        (the discovery thread; tests and --once call it directly)."""
        changed = self.discoverer.run_due(stopping)
        with self._reload_lock:
            if changed or self._saved.unclaimed:
                self._take_up(self.config)
                self._discovery_wake.clear()  # it listed just now
                log.info("discovered targets changed", extra={"targets": len(self.targets)})
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
            self._threads.running = True
            self._threads.start(self._target_set.pollers)
            self._threads.start_discovery(self._run_discovery)

    # -- callbacks ------------------------------------------------------------------------

    def deliver(self, bucket: str | None, event: CallbackEvent) -> str:
        """A callback from the receiver (its worker thread): queued for its target's poll
        thread, or what became of it here (exporter.poller_callbacks.route)."""
        return route(self.board.owners(), bucket, event)

    def _apply_callbacks(self, poller: TargetPoller) -> None:
        """On the target's thread: count what callbacks reported, and publish at once."""
        if count_applied(poller, self.clock(), self.stats.callbacks):
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
            pollers = list(self._target_set.pollers.values())
            threads = self._threads.all()
        for poller in pollers:
            halt(poller)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for poller in pollers:
            poller.close()


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
