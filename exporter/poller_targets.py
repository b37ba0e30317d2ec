"""The targets a Poller polls: those of the running configuration and those discovery found
(this shard's share), each built once, with its client, and offered every new configuration;
a target discovery finds again claims what a previous process saved of it.

Threads: `pollers`, `config` and the discovery entries are changed by the Poller's
constructor, its reload thread and its discovery thread, under the Poller's `_reload_lock`;
other threads read `pollers` and `config` without it (reference swaps). A target's client is
built on its own poll thread, with the builder made here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from exporter.api_stats import ApiStats
from exporter.board import Board, TargetId, target_id
from exporter.ci.client import CIClient
from exporter.config import Config, TargetConfig
from exporter.poll.clients import SharedClients, build_client
from exporter.poll.discovery import BucketEndpoint, Discoverer
from exporter.poll.discovery import ClientFactory as DiscoveryClientFactory
from exporter.poll.target import TargetPoller
from exporter.poller_state import SavedTargets
from exporter.sharding import Shard, select
from exporter.stream_counts import CodeLimiter

Clock = Callable[[], float]
ClientFactory = Callable[[TargetConfig, Config, ApiStats], CIClient]


class Stopping(Exception):
    """stop() came while the targets were being built."""


class TargetSet:
    """The targets polled now, by bucket and region, and the configuration they were built
    with; `apply` makes them those of a new configuration."""

    def __init__(
        self,
        config: Config,
        stats: ApiStats,
        board: Board,
        saved: SavedTargets,
        *,
        clock: Clock,
        client_factory: ClientFactory | None,
        shard: Shard,
        queue_page_size: int,
        shared: SharedClients,
        discovery_client_factory: DiscoveryClientFactory,
        bucket_endpoint: BucketEndpoint,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.client_factory = client_factory
        self.queue_page_size = queue_page_size
        self._shared = shared
        self.shard = shard
        self.config = config
        self.codes = CodeLimiter(config.failure_code_limit)
        self.board = board
        self.saved = saved
        self.pollers: dict[TargetId, TargetPoller] = {}
        self._started = self.clock()
        self.discoverer = Discoverer(
            config, discovery_client_factory, clock=self.clock, bucket_endpoint=bucket_endpoint
        )

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

    def _new_target(
        self, target: TargetConfig, config: Config, stop: threading.Event
    ) -> TargetPoller:
        stopping = threading.Event()
        if stop.is_set():
            stopping.set()
        saved = self.saved.claim(f"{target.bucket}/{target.region}", target)
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

    def apply(self, config: Config, stop: threading.Event) -> list[TargetPoller]:
        """Make the targets those of `config` (this shard's share); return the ones dropped.
        Targets kept are offered the new configuration; their threads take it up. Raises
        Stopping once `stop` is set."""
        pollers: dict[TargetId, TargetPoller] = {}
        self.discoverer.reconfigure(config)
        targets = config.targets + self.discoverer.targets()
        for target in select(targets, self.shard):
            if stop.is_set():
                raise Stopping  # stop() waits for this lock: building the rest is no use
            current = self.pollers.get(target_id(target))
            if current is None or current.target.endpoint != target.endpoint:
                pollers[target_id(target)] = self._new_target(target, config, stop)
            else:  # same bucket at the same address: its streams keep their accounting
                saved = self.saved.claim(current.name, target)
                current.offer(target, config, saved[0] if saved else None)
                pollers[target_id(target)] = current
        dropped = [p for tid, p in self.pollers.items() if pollers.get(tid) is not p]
        if self.saved.unclaimed and self._unclaimed_expired(config):
            self.saved.unclaimed.clear()  # saved, listed by no discovery: gone, as if removed
        self.saved.follow(config.state_file)
        if self.saved.file is not None:
            # Before anything else sees the new set: a save of a dropped target, wherever it
            # stands, can no longer put it back in the file.
            self.saved.retain(self.saved.file, pollers)
        self.pollers = pollers
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
