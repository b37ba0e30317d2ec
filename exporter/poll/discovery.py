"""Bucket discovery: the targets of each `discovery:` entry, found by listing the buckets its
services are enabled on, region by region, on the entry's own interval.

Thread ownership: rounds run on one thread at a time (the Poller's discovery thread, or a
test calling `run_due`), and make their calls holding no lock; the entries, their listings
and what they found are changed and read under `_lock` (a reload reconfigures from its own
thread). `statuses()` and `targets()` return immutable records swapped in under it.

What a round does, per entry: one listing per (region, service), on the region's service host
(`ci.<region>.myqcloud.com`), once for the exact `buckets`, once per prefix, or once for every
bucket when neither is given. A listing that fails keeps what it found last (and is retried at
the next round, not sooner); one that succeeds marks each bucket it lists as seen, and a bucket
it no longer lists stops being polled for that service once it has been missing for `grace`.
A bucket is a target with the entry's credentials and, of the entry's services, those it is
found enabled on. A bucket named by `targets:` or by an earlier entry is left to that one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from exporter.ci.discovery import DiscoveryClient, service_endpoint
from exporter.ci.models import CIError, CIStopped
from exporter.ci.services import Service, service_named
from exporter.config import Config, DiscoveryConfig, ServiceConfig, TargetConfig
from exporter.snapshot import DiscoveryStatus

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# (the entry, its region) -> the client listing that region's buckets
ClientFactory = Callable[[DiscoveryConfig, str, Config], DiscoveryClient]
# (bucket, region) -> the endpoint its target polls; the public CI host by default
BucketEndpoint = Callable[[str, str], str]


def public_endpoint(bucket: str, region: str) -> str:
    return f"https://{bucket}.ci.{region}.myqcloud.com"


@dataclass
class _Listing:
    """One (region, service) of an entry: each bucket's last sighting by a listing that
    succeeded; how the last listing went."""

    seen: dict[str, float] = field(default_factory=dict)
    successful: bool = False
    last_success_time: float | None = None
    duration: float = 0.0


@dataclass
class _Entry:
    config: DiscoveryConfig
    listings: dict[tuple[str, str], _Listing] = field(default_factory=dict)
    next_round: float = 0.0  # monotonic; 0: at once
    tried: bool = False  # its first round is over, however it went
    over_cap: int = 0  # buckets found beyond max_buckets, as last logged

    def listing(self, region: str, service: str) -> _Listing:
        return self.listings.setdefault((region, service), _Listing())

    @property
    def wanted(self) -> set[tuple[str, str]]:
        return {(r, s.name) for r in self.config.regions for s in self.config.services}

    def current(self) -> Iterator[tuple[tuple[str, str], _Listing]]:
        """Its listings of the regions and services it lists now (a reload may have left
        others in the dictionary it shares with the entry it replaced)."""
        wanted = self.wanted
        return ((key, listing) for key, listing in self.listings.items() if key in wanted)

    @property
    def discovered(self) -> bool:
        """Every one of its listings has succeeded at least once."""
        return all(
            (key in self.listings and self.listings[key].last_success_time is not None)
            for key in self.wanted
        )


class Discoverer:
    """The discovery entries of the running configuration and what they found."""

    def __init__(
        self,
        config: Config,
        client_factory: ClientFactory,
        *,
        clock: Clock,
        bucket_endpoint: BucketEndpoint = public_endpoint,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._clock = clock
        self._monotonic = monotonic
        self._bucket_endpoint = bucket_endpoint
        self._lock = threading.Lock()
        self._config = config
        self._entries: list[_Entry] = []
        self._targets: tuple[TargetConfig, ...] = ()
        self._statuses: tuple[DiscoveryStatus, ...] = ()
        self.reconfigure(config)

    # -- what other threads read ------------------------------------------------------------

    def targets(self) -> tuple[TargetConfig, ...]:
        return self._targets

    def statuses(self) -> tuple[DiscoveryStatus, ...]:
        return self._statuses

    def tried(self) -> bool:
        """Every entry has had its first round (readiness waits for it)."""
        with self._lock:
            return all(entry.tried for entry in self._entries)

    def settled(self) -> bool:
        """Every entry's every listing has succeeded once: a bucket not found by now is not
        a target of this configuration (a state file's targets wait for this)."""
        with self._lock:
            return all(entry.discovered for entry in self._entries)

    # -- the discovery thread ---------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Take up a reloaded configuration: an entry that is unchanged keeps what it found
        and its schedule; a new or changed one is listed at the next round."""
        with self._lock:
            kept = {e.config.listed: e for e in self._entries}
            self._entries = [_taken_up(kept.get(c.listed), c) for c in config.discovery]
            self._config = config
            self._publish()

    def next_due(self) -> float | None:
        """Monotonic time of the next round due, None without entries."""
        with self._lock:
            return min((e.next_round for e in self._entries), default=None)

    def run_due(self, stopping: threading.Event | None = None) -> bool:
        """List every entry that is due; whether the targets found changed."""
        with self._lock:
            before = self._targets
            due = [e for e in self._entries if e.next_round <= self._monotonic()]
            config = self._config
        for entry in due:
            if stopping is not None and stopping.is_set():
                break
            self._round(entry, config, stopping)
            with self._lock:
                entry.next_round = self._monotonic() + entry.config.interval
                entry.tried = True
                self._publish()
        return self._targets != before

    def _round(self, entry: _Entry, config: Config, stopping: threading.Event | None) -> None:
        for region in entry.config.regions:
            try:
                client = self._client_factory(entry.config, region, config)
            except Exception:  # a factory that fails is a bug: every listing of it fails
                log.exception("cannot build the discovery client", extra={"region": region})
                continue
            with client:
                for services in _by_listing(entry.config.services):
                    if stopping is not None and stopping.is_set():
                        return
                    try:
                        self._list(entry, client, region, services)
                    except CIStopped:
                        return

    def _list(
        self, entry: _Entry, client: DiscoveryClient, region: str, services: list[Service]
    ) -> None:
        """One listing for `services` (they share it: workflows and batch jobs are on the
        buckets media is enabled on), its outcome recorded for each."""
        outcome = self._listed(client, region, services, entry)
        for service in services:
            self._record(entry, region, service.name, outcome)

    def _listed(
        self, client: DiscoveryClient, region: str, services: list[Service], entry: _Entry
    ) -> tuple[set[str] | None, float]:
        service = services[0]
        started = self._monotonic()
        try:
            found: set[str] | None = _buckets(client, service, region, entry.config)
        except CIStopped:
            raise
        except (CIError, ValueError) as error:
            found = None
            log.warning(
                "bucket discovery failed; the buckets found before are still polled",
                extra={"region": region, "service": service.name, "error": str(error)},
            )
        return found, self._monotonic() - started

    def _record(
        self, entry: _Entry, region: str, name: str, outcome: tuple[set[str] | None, float]
    ) -> None:
        found, duration = outcome
        with self._lock:
            listing = entry.listing(region, name)
            listing.duration = duration
            if found is None:
                listing.successful = False
                return
            now = self._clock()
            if not listing.successful and listing.last_success_time is not None:
                log.info("bucket discovery recovered", extra={"region": region})
            listing.successful, listing.last_success_time = True, now
            for bucket in found:
                listing.seen[bucket] = now
            for bucket, seen in list(listing.seen.items()):
                if bucket not in found and now - seen >= entry.config.grace:
                    del listing.seen[bucket]

    def _publish(self) -> None:
        """Under `_lock`: what the entries found, as targets and statuses."""
        self._targets = tuple(self._found())
        self._statuses = tuple(_statuses(self._entries))

    def _note_capped(self, entry: _Entry, found: int) -> None:
        over = max(0, found - entry.config.max_buckets)
        if over != entry.over_cap:
            extra = {"regions": ",".join(entry.config.regions), "left_out": over}
            if over:
                log.warning("discovery found more buckets than max_buckets", extra=extra)
            else:
                log.info("discovery found no more buckets than max_buckets", extra=extra)
            entry.over_cap = over

    def _found(self) -> Iterable[TargetConfig]:
        taken = {(t.bucket, t.region) for t in self._config.targets}
        for entry in self._entries:
            enabled: dict[tuple[str, str], set[str]] = {}
            for (region, service), listing in entry.current():
                for bucket in listing.seen:
                    enabled.setdefault((bucket, region), set()).add(service)
            found = sorted(enabled, key=lambda b: (b[1], b[0]))
            self._note_capped(entry, len(found))
            for bucket, region in found[: entry.config.max_buckets]:
                if (bucket, region) in taken:
                    continue
                taken.add((bucket, region))
                services = _enabled(entry.config.services, enabled[(bucket, region)])
                yield TargetConfig(
                    bucket,
                    region,
                    self._bucket_endpoint(bucket, region),
                    entry.config.credentials,
                    services,
                )


def _taken_up(old: _Entry | None, config: DiscoveryConfig) -> _Entry:
    """The entry for `config`: the old one's listings (the same dictionary: a round under way
    lands in it) and schedule, when it lists the same; a new one else."""
    if old is None:
        return _Entry(config)
    due = old.next_round - old.config.interval + config.interval if old.tried else 0.0
    return _Entry(config, old.listings, due, old.tried)


def _by_listing(services: Sequence[ServiceConfig]) -> list[list[Service]]:
    """The entry's services, grouped by the bucket listing that finds their buckets."""
    groups: dict[str, list[Service]] = {}
    for config in services:
        service = service_named(config.name)
        groups.setdefault(service.buckets.path, []).append(service)
    return list(groups.values())


def _enabled(services: Sequence[ServiceConfig], names: set[str]) -> tuple[ServiceConfig, ...]:
    return tuple(s for s in services if s.name in names)


def _buckets(
    client: DiscoveryClient, service: Service, region: str, entry: DiscoveryConfig
) -> set[str]:
    """The bucket ids of `region` the service is enabled on that the entry asks for."""
    found: set[str] = set()
    if entry.buckets:
        listed = client.list_buckets(service, regions=[region], names=entry.buckets)
        found.update(b.bucket_id for b in listed)
    for prefix in entry.prefixes:
        listed = client.list_buckets(service, regions=[region], prefix=prefix)
        found.update(b.bucket_id for b in listed)
    if not entry.buckets and not entry.prefixes:
        found.update(b.bucket_id for b in client.list_buckets(service, regions=[region]))
    return found


def _statuses(entries: Sequence[_Entry]) -> Iterable[DiscoveryStatus]:
    """One per (region, service), the entries listing it merged."""
    merged: dict[tuple[str, str], list[_Listing]] = {}
    for entry in entries:
        for key, listing in entry.current():
            merged.setdefault(key, []).append(listing)
    for (region, service), listings in sorted(merged.items()):
        times = [listing.last_success_time for listing in listings]
        yield DiscoveryStatus(
            region,
            service,
            len(set().union(*(listing.seen for listing in listings))),
            all(listing.successful for listing in listings),
            None if None in times else min(t for t in times if t is not None),
            sum(listing.duration for listing in listings),
        )


__all__ = ["Discoverer", "DiscoveryStatus", "public_endpoint", "service_endpoint"]
