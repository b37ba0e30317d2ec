"""The families of bucket discovery (exporter.poll.discovery): per region and service, the
buckets found and how the last listing went. None without discovery.

No state: every function builds new families from the snapshot it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import Metric

from exporter.families import (
    DISCOVERED,
    DISCOVERY_DURATION,
    DISCOVERY_OK,
    DISCOVERY_TIME,
    family,
    sample,
)
from exporter.snapshot import DiscoveryStatus

_FAMILIES: tuple[tuple[str, str, Callable[[DiscoveryStatus], float | None]], ...] = (
    (
        DISCOVERED,
        "Buckets the service is enabled on in the region, found by discovery and polled (those"
        " missing from the listings for less than the grace period included).",
        lambda status: status.buckets,
    ),
    (
        DISCOVERY_OK,
        "1 when the last bucket listing of the region and service succeeded, else 0 (the"
        " buckets found before are still polled).",
        lambda status: 1 if status.successful else 0,
    ),
    (
        DISCOVERY_TIME,
        "Unix time the bucket listing of the region and service last succeeded.",
        lambda status: status.last_success_time,
    ),
    (
        DISCOVERY_DURATION,
        "Seconds the last bucket listing of the region and service took, every page included.",
        lambda status: status.duration,
    ),
)


def discovery_families(statuses: tuple[DiscoveryStatus, ...]) -> Iterator[Metric]:
    if not statuses:
        return
    for name, documentation, value_of in _FAMILIES:
        samples = [
            sample(name, {"region": s.region, "service": s.service}, value)
            for s in statuses
            if (value := value_of(s)) is not None
        ]
        yield family(name, documentation, "gauge", samples)
